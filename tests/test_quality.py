"""ruff and mypy --strict are part of the suite, so CI refuses code that drifts from the style.

Both check the whole code base: the package, its tests and the benchmarks (``bench/``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else (shutil.which(name) or name)


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [tool("ruff"), "check", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:]


def test_mypy_strict_is_clean() -> None:
    result = subprocess.run(
        [tool("mypy")],  # the files are pyproject's: the test checks the command a developer runs
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:]


def test_the_lowest_versions_ci_installs_are_the_floors_pyproject_declares() -> None:
    """``.ci/lowest`` tests the floors: a floor raised or added without its constraint would go untested
    (aiokafka 0.11 and pydantic-settings 2.3 were declared and failed: a review run)."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {}
    for text in declared:
        requirement = Requirement(text)
        lowest = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert len(lowest) == 1, f"{text}: one >= floor"
        floors[canonicalize_name(requirement.name)] = Version(lowest[0])
    pinned = {}
    for line in (ROOT / ".ci" / "lowest-constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[canonicalize_name(name)] = Version(version)
    assert pinned == floors
