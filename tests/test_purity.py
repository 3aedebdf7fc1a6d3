"""The pure code imports nothing from the Kafka loop, the operations server, the commands or asyncio.

Pure here means what the style guide says of the domain: no Kafka, no event loop, so the physics, the
policies, the I/O-free pipeline, the backtest and the audit can be run, tested and reasoned about alone.
Who is held to it, and why:

* the domain: ``battery``, ``battery_config``, ``dispatch``, ``ticks``, ``events``, ``errors``, ``sites``
  (which battery and policy a site uses), ``chemistries`` (the battery types' presets);
* ``fleet/`` (the site's machines and their economics, "Pure"), ``audit`` ("Pure"),
  ``pipeline/`` ("no Kafka client, no event loop"), ``policies/`` ("Each is pure"),
  ``backtest/`` (engine and optimum "Pure"; the report writes a PNG but needs no Kafka either);
* ``seed_api``, the Python API, a façade over the domain that must work without a broker;
* ``monitor.answers`` (what a price API answer holds, "pure") and the ``monitor`` package's docstring-only
  ``__init__``; the rest of ``monitor/`` fetches and publishes;
* ``settings``: not I/O-free (it reads the environment and a TOML file), but the pipeline imports it, so it
  is held to the same imports.

Not held to it: ``pricefiles`` (reads files; the commands use it), ``kafka/``, ``ops/``, ``cli/``.

Two checks: each module's own import statements (parsed with ``ast``, so ``from asyncio import sleep``,
an import inside a function and a relative import all count), and, in a fresh interpreter, what importing
them really loads: every ``battery_worker`` module loaded on the way must be in the list above (then the
first check covers it), and no ``aiokafka`` nor Kafka, ops or command module may be loaded. ``asyncio``
itself is only checked in our own code: pydantic-settings imports it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "battery_worker"

PURE_MODULES = (
    "battery",
    "battery_config",
    "dispatch",
    "ticks",
    "events",
    "errors",
    "frozen",
    "sites",
    "chemistries",
    "audit",
    "emissions",
    "seed_api",
    "outputs",
    "settings",
    "strict_numbers",
    "monitor",
    "monitor.answers",
)
PURE_PACKAGES = ("policies", "pipeline", "backtest", "fleet")
#: Not one of these, nor anything below them.
BANNED = ("asyncio", "aiokafka", "battery_worker.kafka", "battery_worker.ops", "battery_worker.cli")
#: What the import check in a fresh interpreter looks for (asyncio comes with pydantic-settings).
BANNED_LOADED = BANNED[1:]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def pure_modules() -> list[str]:
    paths = [module_path(f"battery_worker.{name}") for name in PURE_MODULES]
    for package in PURE_PACKAGES:
        paths += sorted((PACKAGE / package).rglob("*.py"))
    missing = [str(path.relative_to(ROOT)) for path in paths if not path.is_file()]
    assert not missing, f"pure modules listed here no longer exist (moved? update the list): {missing}"
    assert paths, "no pure module found"
    return [module_name(path) for path in paths]


def is_banned(name: str, banned: tuple[str, ...] = BANNED) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in banned)


def imported_names(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """Every module an ``import`` or ``from ... import`` names, absolute, with its line number.

    ``from battery_worker import kafka`` names ``battery_worker.kafka`` (it may be a module), and relative
    imports are resolved against ``module``.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".")
                anchor = package if is_package else package[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def banned_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    return [
        f"line {line}: {name}" for line, name in imported_names(source, module, is_package) if is_banned(name)
    ]


def module_path(module: str) -> Path:
    base = ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


#: Run in a fresh interpreter: import each module in turn, report what each one newly loaded.
_LOADER = """
import importlib, json, sys
loaded = {}
for name in sys.argv[1:]:
    before = set(sys.modules)
    importlib.import_module(name)
    loaded[name] = sorted(set(sys.modules) - before)
print(json.dumps(loaded))
"""


def loaded_by(modules: list[str], extra_path: Path | None = None) -> dict[str, list[str]]:
    """module → the modules importing it loaded (in this order, each in the same fresh interpreter)."""
    path = [str(extra_path)] if extra_path is not None else []
    code = f"import sys; sys.path[:0] = {path!r}\n{_LOADER}"
    result = subprocess.run(
        [sys.executable, "-c", code, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded: dict[str, list[str]] = json.loads(result.stdout)
    return loaded


def transitive_problems(loaded: dict[str, list[str]], pure: set[str]) -> list[str]:
    problems = []
    for module, names in loaded.items():
        problems += [f"importing {module} loads {name}" for name in names if is_banned(name, BANNED_LOADED)]
        problems += [
            f"importing {module} loads {name}, which is not held to purity here"
            for name in names
            if name.startswith("battery_worker.") and name not in pure and not is_banned(name, BANNED_LOADED)
        ]
    return problems


@pytest.mark.parametrize("module", pure_modules())
def test_a_pure_module_imports_nothing_from_kafka_ops_the_commands_or_asyncio(module: str) -> None:
    path = module_path(module)
    found = banned_imports(path.read_text(), module, path.name == "__init__.py")
    assert not found, f"{path.relative_to(ROOT)} imports {found}"


def test_importing_the_pure_modules_loads_no_kafka_and_only_pure_modules_of_ours() -> None:
    modules = pure_modules()
    problems = transitive_problems(loaded_by(modules), set(modules))
    assert not problems, problems


def test_settings_does_not_import_the_pipeline() -> None:
    """``TopicNames`` and the default topic names live in settings; the pipeline depends on settings."""
    loaded = loaded_by(["battery_worker.settings"])["battery_worker.settings"]
    assert not [name for name in loaded if name.startswith("battery_worker.pipeline")], loaded


# ------------------------------------------------------------------------ the checks catch what they should


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "from asyncio import sleep",
        "import asyncio.subprocess as sp",
        "from aiokafka import AIOKafkaConsumer",
        "import aiokafka.errors",
        "from battery_worker.kafka.worker import Worker",
        "from battery_worker import kafka",
        "from battery_worker.ops import metrics",
        "import battery_worker.cli.main",
        "from .. import kafka",
        "from ..kafka.worker import Worker",
        "def later():\n    from asyncio import run\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import aiokafka\n",
    ],
)
def test_the_source_check_catches_each_way_of_importing_a_banned_module(source: str) -> None:
    assert banned_imports(source, "battery_worker.pipeline.impure"), source


@pytest.mark.parametrize(
    "source",
    [
        "import asynciolike",
        "from battery_worker.kafkaesque import x",
        "from battery_worker import battery",
        "from . import payloads",
        "import battery_worker.operations",
    ],
)
def test_the_source_check_lets_look_alike_names_pass(source: str) -> None:
    assert not banned_imports(source, "battery_worker.pipeline.clean"), source


def test_the_import_check_catches_a_kafka_module_loaded_through_another_module(tmp_path: Path) -> None:
    """``impure`` imports ``middle``, which imports the Kafka backoff: a source check of ``impure`` alone
    would pass; what the interpreter loaded shows it."""
    (tmp_path / "middle_purity_probe.py").write_text("import battery_worker.kafka.backoff\n")
    (tmp_path / "impure_purity_probe.py").write_text("import middle_purity_probe\n")
    assert not banned_imports("import middle_purity_probe\n", "impure_purity_probe")
    loaded = loaded_by(["battery_worker.battery", "impure_purity_probe"], tmp_path)
    problems = transitive_problems(loaded, set(pure_modules()))
    assert any("impure_purity_probe loads battery_worker.kafka" in problem for problem in problems), problems
    assert not [problem for problem in problems if "importing battery_worker.battery" in problem]
