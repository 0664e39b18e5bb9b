"""Atomic file output: write to a temporary file beside the target, then rename over it.

Temporary files and folders are named `.NAME.HOST-PID.RANDOM.tmp` and created with the modes
`open` and `mkdir` use (0666 and 0777 less the umask), so results get the same permissions as
any other file the user writes. A process killed mid-write leaves its temporary behind; the next
write of the same target removes those whose process is gone (same host) or that are older than
`STALE_AFTER_S`, as well as `.NAME.old.PID` folders a killed `replace_dir` left.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

# No write of one file or folder takes this long; a temporary older than this is abandoned.
STALE_AFTER_S = 6 * 3600
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{_HOST}-{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Removes what killed writes of `target` left beside it; returns what was removed."""
    target = Path(target)
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:(?:([0-9a-f]{{8}})-(\d+)\.)?[^/]*\.tmp|old\.(\d+))$")
    removed: list[Path] = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None:
            continue
        host, pid, old_pid = match.groups()
        try:
            age = now - entry.lstat().st_mtime
        except OSError:
            continue
        owner = int(pid) if host == _HOST else int(old_pid) if old_pid else None
        if owner == os.getpid() and age < STALE_AFTER_S:
            continue  # this process's own write in progress
        if age < STALE_AFTER_S and (owner is None or _pid_alive(owner)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed


def _named(error: OSError, path: Path) -> OSError:
    """The same error, naming the target rather than a temporary (or nothing, as ENOSPC does)."""
    return type(error)(error.errno, error.strerror or str(error), str(path))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Yields a file object; the target appears only if the block finishes without error."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; give a file name", str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        tmp = _temp_name(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as error:
        raise _named(error, path) from error
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, OSError) and (error.filename is None or str(error.filename) == str(tmp)):
            raise _named(error, path) from error
        raise


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Puts folder `new` at `target`, replacing an old one, which is removed only afterwards."""
    new, target = Path(new), Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}.old.{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a fresh folder beside `path` to fill; on success it replaces `path` (`replace_dir`),
    on any error it is removed and `path` stays as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        tmp = _temp_name(path)
        tmp.mkdir(0o777)
    except OSError as error:
        raise _named(error, path) from error
    try:
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, data) -> None:
    """`data` as indented JSON, written atomically."""
    with atomic_write(path) as out:
        json.dump(data, out, indent=2)
