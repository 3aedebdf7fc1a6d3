"""The README and docs/ say only what is true of this tree: every command shown is checked, every link
resolves, and the README's layout block lists exactly the packages and modules there are.

Commands are read from the fenced blocks tagged ``bash``, ``sh``, ``shell`` or ``console`` and checked
without running anything: ``battery-worker …`` is parsed by the real parser, ``python -m M`` must name an
importable module with a ``main``, scripts, compose files and input files must exist, ``pip install``
extras must be declared. A command this file does not know fails, naming the doc and line: teach
:func:`check_command` how to check it. Every fenced block must name its language, so no command hides in
an untagged one.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from battery_worker.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
LANGUAGES = SHELL | {"python", "toml", "yaml", "text"}
RUNNABLE_PYTHON = {ROOT / "README.md", ROOT / "docs" / "dispatch.md"}
"""Docs whose Python blocks are whole programs (the others quote fragments of measuring probes)."""
EXTERNAL_DATA = ("/work/shared/data",)
"""Input files outside the repository that docs name on purpose (the shared market data): not checked."""
TOOLS = {
    "cat": "shows what the launcher printed",
    "grep": "picks a line of it",
    "curl": "asks the worker's /ready and /metrics",
    "kill": "stops the background launcher",
    "wait": "waits for it",
    "sleep": "paces a loop",
    "break": "leaves a loop",
    "mvn": "fetches Kafka's ACL tool jar",
    "java": "runs it",
}
"""Programs a doc may run that are not this project's: allowed as they are, each for the reason given."""
SHELL_WORDS = {"until", "while", "do", "done", "if", "then", "else", "fi", "!"}
PYTHONS = {"python", "python3", ".venv/bin/python", ".venv/bin/python3"}
SELF = {"battery-worker", ".venv/bin/battery-worker"}


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence
    language: str
    lines: list[str] = field(default_factory=list)

    def where(self, offset: int = 0) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line + 1 + offset}"


def blocks(path: Path) -> Iterator[Block]:
    block: Block | None = None
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if text.startswith("```"):
            if block is None:
                block = Block(path, number, text[3:].strip())
            else:
                yield block
                block = None
        elif block is not None:
            block.lines.append(text)


@dataclass(frozen=True)
class Command:
    where: str
    text: str
    functions: frozenset[str]  # shell functions defined earlier in the same doc


def commands() -> Iterator[Command]:
    for path in DOCS:
        functions: set[str] = set()
        for block in blocks(path):
            if block.language not in SHELL:
                continue
            for offset, text in logical_lines(block.lines):
                defined = re.match(r"^(\w+)\(\)\s*\{", text)
                if defined:
                    functions.add(defined.group(1))
                yield Command(block.where(offset), text, frozenset(functions))


def logical_lines(lines: list[str]) -> Iterator[tuple[int, str]]:
    """Lines joined at a trailing backslash, with the offset of their first line; blanks and comments out."""
    start = 0
    parts: list[str] = []
    for offset, text in enumerate(lines):
        if not parts:
            start = offset
        if text.endswith("\\"):
            parts.append(text[:-1])
            continue
        whole = " ".join([*parts, text]).strip()
        parts = []
        if whole and not whole.startswith("#"):
            yield start, whole


def check_command(text: str, functions: frozenset[str] = frozenset()) -> list[str]:
    """What is wrong with one shell line, as shown in a doc: an empty list when every command checks out."""
    problems: list[str] = []
    function = re.match(r"^(\w+)\(\)\s*\{(.*);\s*\}$", text)
    if function:
        return check_command(function.group(2), functions | {function.group(1)})
    for inner in re.findall(r"\$\(([^()]*)\)", text):
        problems += check_command(inner, functions)
    text = re.sub(r"\$\([^()]*\)", "SUBSTITUTED", text)
    text = re.sub(r"\s\d?>>?(&\d|\s*\S+)", " ", text)  # redirections
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    simple: list[str] = []
    for token in [*lexer, ";"]:
        if token in {";", "&", "&&", "|", "||"}:
            problems += check_simple(simple, functions)
            simple = []
        else:
            simple.append(token)
    return problems


def check_simple(words: list[str], functions: frozenset[str]) -> list[str]:
    while words and (words[0] in SHELL_WORDS or re.match(r"^[A-Za-z_]\w*=", words[0])):
        words = words[1:]
    if words and words[0] == "env":
        words = words[1:]
        while words and (re.match(r"^[A-Za-z_]\w*=", words[0]) or words[0].startswith("$")):
            words = words[1:]
    if not words:
        return []
    program, args = words[0], words[1:]
    if program in SELF:
        return check_battery_worker(args)
    if program in PYTHONS:
        return check_python(args)
    if program in {"pip", ".venv/bin/pip"}:
        return check_pip(args)
    if program in {"pytest", ".venv/bin/pytest"}:
        paths = [
            a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1 : i] not in (["-m"], ["-k"])
        ]
        missing = [a for a in paths if not (ROOT / a.split("::")[0]).exists()]
        return [f"pytest: no such test path {a}" for a in missing]
    if program == "docker":
        return check_docker(args)
    if program == "kafka-configs.sh":
        return check_kafka_configs(args)
    if program in TOOLS or program in functions:
        return []
    return [f"unknown command {program!r}: teach tests/test_docs.py how to check it"]


def check_battery_worker(args: list[str]) -> list[str]:
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
            parsed = build_parser().parse_args(args)
    except SystemExit as exit_:  # the parser's own words say which argument (a contributor review)
        refused = f"the parser refuses it: {said.getvalue().strip()}"
        return [] if exit_.code == 0 else [f"battery-worker {' '.join(args)}: {refused}"]
    inputs = [getattr(parsed, name, None) for name in ("file", "config")]
    if parsed.command == "feed" or parsed.command == "backtest":
        inputs = [parsed.file, getattr(parsed, "config", None)]
    return [f"no such file {path}" for path in inputs if path is not None and not exists(str(path))]


def check_python(args: list[str]) -> list[str]:
    if args[:1] == ["-m"] and len(args) > 1:
        module = args[1]
        if importlib.util.find_spec(module) is None:
            return [f"python -m {module}: no such module"]
        if not hasattr(importlib.import_module(module), "main"):
            return [f"python -m {module}: the module has no main"]
        if module.startswith("battery_worker") and len(args) > 2 and not args[2].startswith("-"):
            return [] if exists(args[2]) else [f"no such file {args[2]}"]
        return []
    if args and not args[0].startswith("-"):
        return [] if (ROOT / args[0]).is_file() else [f"python: no such script {args[0]}"]
    return [f"python {' '.join(args)}: neither -m MODULE nor a script"]


def check_pip(args: list[str]) -> list[str]:
    if args[:1] != ["install"]:
        return [f"pip {' '.join(args)}: only pip install is shown"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    problems = []
    for arg in args[1:]:
        wanted = re.fullmatch(r"\.\[([\w,-]+)\]", arg)
        if wanted:
            problems += [
                f"pip install: no extra {e!r}" for e in wanted.group(1).split(",") if e not in extras
            ]
        elif not arg.startswith("-"):
            problems.append(f"pip install {arg}: only this project and its extras are installed")
    return problems


def check_docker(args: list[str]) -> list[str]:
    if args[:2] != ["compose", "-f"] or len(args) < 3:
        return [f"docker {' '.join(args)}: only docker compose -f FILE is shown"]
    compose = ROOT / args[2]
    if not compose.is_file():
        return [f"no such compose file {args[2]}"]
    services = set(re.findall(r"^  ([\w-]+):$", compose.read_text(), flags=re.MULTILINE))
    named = [a for a in args[4:] if not a.startswith("-")]
    return [f"{args[2]} has no service {name!r}" for name in named if name not in services]


def check_kafka_configs(args: list[str]) -> list[str]:
    """Kafka's own tool, shown to give a topic the configs the worker creates it with: those must match."""
    from battery_worker.kafka.topics import ROLLED_HOURLY

    if "--add-config" not in args:
        return ["kafka-configs.sh: only --alter --add-config of the worker's own topic configs is shown"]
    given = dict(pair.split("=", 1) for pair in args[args.index("--add-config") + 1].split(","))
    return [] if given == ROLLED_HOURLY else [f"kafka-configs.sh --add-config {given} != {ROLLED_HOURLY}"]


def exists(path: str) -> bool:
    return path.startswith(EXTERNAL_DATA) or (ROOT / path).exists()


COMMANDS = list(commands())


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_every_shell_command_in_the_docs_checks_out(command: Command) -> None:
    assert check_command(command.text, command.functions) == [], f"{command.where}: {command.text}"


def test_the_checker_finds_each_kind_of_wrong_command() -> None:
    assert check_command(".venv/bin/battery-worker run --no-such-flag")
    assert check_command("battery-worker feed no-such-file.csv --site a")
    assert check_command(".venv/bin/python -m battery_worker.no_such_module")
    assert check_command(".venv/bin/python -m battery_worker.settings")  # no main
    assert check_command(".venv/bin/python bench/no_such_script.py")
    assert check_command(".venv/bin/pip install -e '.[no-such-extra]'")
    assert check_command("docker compose -f docker-compose.kafka.yml up -d no-such-service")
    assert check_command(".venv/bin/pytest tests/test_no_such_file.py")
    assert check_command("rm -rf build")
    assert check_command("x=$(frobnicate --now)")
    assert check_command("kafka_acls --list")
    assert not check_command("kafka_acls --list", frozenset({"kafka_acls"}))


def test_there_are_commands_to_check() -> None:
    assert len(COMMANDS) > 30
    assert any(c.where.startswith("README.md") for c in COMMANDS)


def test_every_fenced_block_names_its_language() -> None:
    wrong = [
        f"{b.where()}: {b.language or 'untagged'}"
        for p in DOCS
        for b in blocks(p)
        if b.language not in LANGUAGES
    ]
    assert wrong == [], f"tag each block with one of {sorted(LANGUAGES)}"


def test_the_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ran = 0
    for path in sorted(RUNNABLE_PYTHON):
        for block in blocks(path):
            if block.language == "python":
                exec(compile("\n".join(block.lines), block.where(), "exec"), {})
                ran += 1
    assert ran >= 2


def test_the_toml_examples_are_valid_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from battery_worker.settings import load_settings

    checked = 0
    for path in DOCS:
        for block in blocks(path):
            if block.language == "toml":
                # The password comes from the environment where a block asks for SASL; beside another
                # protocol it is refused (credentials never sent).
                if any("SASL" in line for line in block.lines):
                    monkeypatch.setenv("BATTERY_WORKER_KAFKA__SASL_PASSWORD", "from-the-environment")
                else:
                    monkeypatch.delenv("BATTERY_WORKER_KAFKA__SASL_PASSWORD", raising=False)
                config = tmp_path / "worker.toml"
                config.write_text("\n".join(block.lines))
                load_settings(config)
                checked += 1
    assert checked >= 1


# --- the layout block --------------------------------------------------------------------------------------


def layout_entries() -> dict[str, str]:
    """The README's layout block: each name listed (``battery.py``, ``kafka/``, ``kafka/tools/``) → text."""
    block = next(b for b in blocks(ROOT / "README.md") if b.lines[:1] == ["battery_worker/"])
    entries: dict[str, str] = {}
    names: list[str] = []
    for text in block.lines[1:]:
        entry = re.match(r"^  (\S+(?: \S+)*?)(?:\s{2,}(.*))?$", text)
        if entry:
            names = entry.group(1).split()
            for name in names:
                entries[name] = entry.group(2) or ""
        else:  # a continuation of the entry above
            for name in names:
                entries[name] += " " + text.strip()
    return entries


PACKAGE = ROOT / "battery_worker"


def test_the_layout_block_lists_every_package_and_top_level_module() -> None:
    entries = layout_entries()
    packages = {
        f"{p.parent.relative_to(PACKAGE).as_posix()}/"
        for p in PACKAGE.rglob("__init__.py")
        if p.parent != PACKAGE
    }
    listed_packages = {
        name for name in entries if name.endswith("/") and (PACKAGE / name / "__init__.py").exists()
    }
    assert listed_packages == packages
    modules = {p.name for p in PACKAGE.glob("*.py")}
    assert {name for name in entries if name.endswith(".py")} == modules
    for name in entries:
        assert (PACKAGE / name).exists(), f"README layout names {name}, which is not in battery_worker/"


@pytest.mark.parametrize(
    "package", sorted(p.parent.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("__init__.py"))[1:]
)
def test_the_layout_block_names_every_module_of_a_package(package: str) -> None:
    text = layout_entries()[f"{package}/"]
    listed = set(re.findall(r"(?<![\w.])(\w+\.py)\b", text))
    actual = {p.name for p in (PACKAGE / package).glob("*.py")} - {"__init__.py"}
    assert listed == actual, f"README layout, {package}/: add {actual - listed}, remove {listed - actual}"


# --- links and paths ---------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.*)$", path.read_text(), flags=re.MULTILINE)}


def prose(path: Path) -> str:
    """The doc without its fenced blocks."""
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(path)):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no such heading)")
    assert broken == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_repository_paths_named_in_the_prose_exist(path: Path) -> None:
    named = re.findall(r"`((?:battery_worker|tests|bench|docs|schemas|\.ci)/[\w./-]*)`", prose(path))
    assert [name for name in named if not (ROOT / name).exists()] == []


def test_the_readme_links_every_page_of_docs() -> None:
    linked = set(re.findall(r"\]\(docs/([\w.-]+\.md)", (ROOT / "README.md").read_text()))
    assert linked == {p.name for p in (ROOT / "docs").glob("*.md")}


def test_the_benchmarks_doc_is_what_its_renderer_makes_of_the_results_and_the_notes() -> None:
    # docs/benchmarks.md is rendered by bench/report.py from bench/results/latest.json and bench/PROFILE.md;
    # an edit made in the doc alone is lost at the next run (it happened: items 11 and 12 were).
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    assert spec is not None
    assert spec.loader is not None
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    results = json.loads((ROOT / "bench" / "results" / "latest.json").read_text())
    rendered = report.render_doc(results, ROOT / "bench" / "PROFILE.md")
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    assert rendered == doc, "edit bench/PROFILE.md (or report.py), then run bench/report.py"


def test_every_setting_is_in_the_configuration_table() -> None:
    """``kafka.request_timeout_ms`` (what holds a command at a broker that never answers), ``client_id`` and
    ``worker.max_poll_interval_ms`` were settings no page named."""
    from pydantic import BaseModel

    from battery_worker.settings import Settings

    table = (ROOT / "docs" / "configuration.md").read_text()

    def unnamed(model: type[BaseModel], prefix: str) -> Iterator[str]:
        for name, described in model.model_fields.items():
            kind = described.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                yield from unnamed(kind, f"{prefix}{name}.")
            elif not any(f"`{named}" in table for named in (f"{prefix}{name}`", f"{name}`", f"{name}.<")):
                yield f"{prefix}{name}"

    assert list(unnamed(Settings, "")) == []


def architecture_rooms() -> dict[str, str]:
    """docs/architecture.md's folders table: each room (``battery_worker/``, ``policies/``) → its modules."""
    rows = re.findall(
        r"^\| `([\w/]+)`(?: \(top\))? \| (.*?) \|", (ROOT / "docs" / "architecture.md").read_text(), re.M
    )
    return {room.removeprefix("battery_worker/") or "": text for room, text in rows}


@pytest.mark.parametrize(
    "room",
    ["", *sorted(p.parent.relative_to(PACKAGE).as_posix() + "/" for p in PACKAGE.rglob("__init__.py"))[1:]],
)
def test_the_architecture_names_every_module_of_each_folder(room: str) -> None:
    """A contributor review: `emissions.py` and `strict_numbers.py` were in no room, and a policy added
    to ``policies/`` failed only the README's check."""
    text = architecture_rooms().get(room)
    assert text is not None, f"docs/architecture.md has no row for {room or 'battery_worker/ (top)'}"
    named = set(re.findall(r"(?<![\w./])(\w+\.py)\b", re.sub(r"`[\w/]+/\w+\.py`", "", text)))
    actual = {p.name for p in (PACKAGE / room).glob("*.py")} - {"__init__.py"}
    assert named >= actual, f"docs/architecture.md, {room or 'the top'}: name {sorted(actual - named)}"


def test_the_architecture_names_the_pure_modules_the_purity_test_holds() -> None:
    from tests.test_purity import PURE_MODULES, PURE_PACKAGES

    text = (ROOT / "docs" / "architecture.md").read_text().split("## The pure domain", 1)[1].split("\n## ")[0]
    named = {
        name.removesuffix(".py").removesuffix("/").replace("/", ".")
        for name in re.findall(r"`([\w/.]+)`", text)
    }
    held = {*PURE_MODULES, *PURE_PACKAGES} - {
        "settings",
        "monitor",
    }  # settings said apart; monitor/ is answers'
    assert held <= named, f"docs/architecture.md, 'The pure domain': name {sorted(held - named)}"
