"""Generate or check ``schemas/``: one JSON Schema per event model.

``python -m battery_worker.cli.schemas`` writes them; ``--check`` exits 1 when a checked-in schema
differs from the models (the test suite runs the same comparison).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from battery_worker.events import EVENT_MODELS

_CHECKOUT = Path(__file__).resolve().parents[2]
DEFAULT_DIR: Path | None = _CHECKOUT / "schemas" if (_CHECKOUT / "pyproject.toml").is_file() else None
"""The checkout's ``schemas/``; installed from a wheel there is none, and ``--dir`` must say where (the
default would have written beside site-packages)."""


def render() -> dict[str, bytes]:
    """File name → schema bytes, pretty-printed with sorted keys so diffs stay readable."""
    pretty = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    return {
        f"{name}.schema.json": orjson.dumps(published(model), option=pretty) + b"\n"
        for name, model in EVENT_MODELS.items()
    }


def published(model: type[BaseModel]) -> dict[str, Any]:
    """The model's schema as consumers get it: open to fields a later version adds.

    A version only adds fields (docs/delivery.md, "Versions"), but the models forbid unknown fields, and
    their ``additionalProperties: false`` made a consumer validating with these files reject the next
    version's events: a version 3 action failed the version 2 schema on ``emissions``.
    """
    schema = model.model_json_schema()
    _open_to_new_fields(schema)
    version = model.model_fields.get("schema_version")
    if version is not None:
        schema["properties"]["schema_version"].update(
            minimum=1,
            description=(
                f"{version.default} for the newest events; earlier versions validate too (the fields they "
                "lack are optional), and so do later ones, which only add fields"
            ),
        )
    return schema


def _open_to_new_fields(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("additionalProperties") is False:
            del node["additionalProperties"]
        for value in node.values():
            _open_to_new_fields(value)
    elif isinstance(node, list):
        for value in node:
            _open_to_new_fields(value)


def out_of_sync(directory: Path) -> list[str]:
    """Names of schema files missing, stale or unexpected in ``directory``."""
    expected = render()
    wrong = [name for name, body in expected.items() if _read(directory / name) != body]
    extra = [p.name for p in directory.glob("*.schema.json") if p.name not in expected]
    return sorted(wrong + extra)


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m battery_worker.cli.schemas", description=__doc__)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when out of sync")
    args = parser.parse_args(argv)
    if args.dir is None:
        parser.error("not run from a source checkout: --dir names the schemas' directory")
    if args.check:
        wrong = out_of_sync(args.dir)
        for name in wrong:
            print(f"out of sync: {args.dir / name}", file=sys.stderr)
        return 1 if wrong else 0
    args.dir.mkdir(parents=True, exist_ok=True)
    for stale in args.dir.glob("*.schema.json"):
        stale.unlink()
    for name, body in render().items():
        (args.dir / name).write_bytes(body)
    print(f"wrote {len(EVENT_MODELS)} schemas to {args.dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
