"""A file the user asked for is written whole or not at all: a failure leaves the previous one, no debris."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from battery_worker.outputs import write_atomically


def test_text_and_bytes_replace_the_file_in_a_new_directory(tmp_path: Path) -> None:
    target = tmp_path / "new" / "history.json"
    assert write_atomically(target, '{"a": "é"}') == target
    assert target.read_text(encoding="utf-8") == '{"a": "é"}'
    write_atomically(target, b"[1, 2]\n")
    assert target.read_bytes() == b"[1, 2]\n"
    assert [p.name for p in target.parent.iterdir()] == ["history.json"]


def test_a_failed_write_leaves_the_previous_file_and_no_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "summary.json"
    target.write_bytes(b"previous")

    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, b"new and complete")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_new_file_gets_the_mode_open_gives_and_a_replaced_one_keeps_its_own(tmp_path: Path) -> None:
    """mkstemp's 0600 made a summary or an export readable by its owner alone, whatever the umask."""
    reference = tmp_path / "opened.json"
    reference.write_bytes(b"{}")
    written = write_atomically(tmp_path / "written.json", b"{}")
    assert written.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777
    written.chmod(0o640)
    write_atomically(written, b"[]")
    assert written.stat().st_mode & 0o777 == 0o640


def test_a_link_is_written_through_and_a_pipe_written_to(tmp_path: Path) -> None:
    """Before: the rename replaced a link with a file (the file it named unchanged), and ``--out
    /dev/stdout`` replaced that device's link with a file, so a reader saw nothing."""
    real = tmp_path / "real.json"
    real.write_bytes(b"old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_atomically(link, b"new")
    assert link.is_symlink()
    assert real.read_bytes() == b"new"
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "made" / "later.json")
    write_atomically(dangling, b"made")
    assert dangling.is_symlink()
    assert (tmp_path / "made" / "later.json").read_bytes() == b"made"

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()), daemon=True)
    reader.start()
    write_atomically(pipe, b'{"through": "the pipe"}')
    reader.join(timeout=10)
    assert received == [b'{"through": "the pipe"}']
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)


def test_a_write_that_fails_names_the_file() -> None:
    """'--summary /dev/full' said 'No space left on device (OSError)', naming no file."""
    with pytest.raises(OSError, match="No space left") as caught:
        write_atomically(Path("/dev/full"), b"x" * 10_000)
    assert caught.value.filename == "/dev/full"
