"""Files the user asked for (``save_history``, ``history export``, ``replay --out``, ``backtest --summary``)
are written whole or not at all.

Why one place: a stop, a full disk or a crash mid-write must leave the previous file or none, never half
of one that a later step would read as complete; each writer had its own way, and some wrote in place.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_NEW_FILE_MODE = 0o666 & ~_process_umask()
"""What ``open(path, "w")`` would give a new file: ``mkstemp`` makes its file 0600 whatever the umask, so a
summary or an export came out readable by its owner alone. Read once, at import: setting the umask to read
it is not safe while other threads create files."""


def _mode_for(target: Path) -> int:
    """A file replaced keeps its mode; a new one gets the umask's."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return _NEW_FILE_MODE


def write_atomically(target: Path, payload: bytes | str) -> Path:
    """Write via a temporary file beside ``target``, synced, then renamed over it: readers see the old
    file or the new one. The temporary file is removed if anything fails.

    A symbolic link is written through: the file it names is replaced and the link kept. What is not a
    file (``/dev/stdout``, a pipe) is written to as it is: there is nothing to replace, and a rename over
    it replaced the device's link with a file (``--out /dev/stdout`` wrote nothing a reader saw and left
    a file where ``/dev/stdout`` was)."""
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    try:
        named = os.stat(target)  # through links
    except FileNotFoundError:
        named = None
    if named is not None and not stat.S_ISREG(named.st_mode):
        try:
            with open(target, "wb") as out:
                out.write(data)
        except OSError as error:  # a full device's write names no file: the message must
            raise OSError(error.errno, error.strerror, str(target)) from None
        return target
    real = Path(os.path.realpath(target)) if target.is_symlink() else target
    real.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), _mode_for(real))
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, real)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        if error.filename is None:  # a full disk's write names no file: the message must
            raise OSError(error.errno, error.strerror, str(target)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
