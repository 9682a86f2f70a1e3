"""Outputs of long jobs: one writer per output, checked before the work starts.

Every long job (capture, traces, SAE training, anchors, steering, demo, ...) takes
:func:`output_lock` on its output before it writes anything: an exclusive ``fcntl.flock``
on a lock file beside the output (``OUT.lock`` for a file, ``OUT/.lock`` for a
directory) that records the holder's pid. A second job into the same place fails at
once naming that pid; the kernel drops the lock of a process that dies, so a lock file
left by a killed job is taken over (with a warning naming the dead pid).

:func:`check_out_dir` / :func:`check_out_file` refuse, before any model load, an output
that is a file where a directory is needed (or the reverse), an unwritable or read-only
location, and a disk with less free space than the job needs. :func:`disk_errors` turns
a disk that fills mid-run into one :class:`MechReasonError` naming the path (writers are
atomic or roll back, so nothing partial is left and the same command resumes).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from mechreason.errors import MechReasonError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
MIN_FREE_ENV = "MECHREASON_MIN_FREE_MB"
MIN_FREE_MB = 16.0
"""Free space every output location needs up front, in MiB (``$MECHREASON_MIN_FREE_MB``)."""
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_HELD: dict[Path, int] = {}  # lock path -> nesting depth, for locks this process holds


def lock_path(out: str | os.PathLike[str], *, is_dir: bool) -> Path:
    """Where the lock of ``out`` lives: inside a directory output, beside a file output."""
    out = Path(out)
    return out / LOCK_NAME if is_dir else out.with_name(out.name + ".lock")


@contextlib.contextmanager
def output_lock(out: str | os.PathLike[str], *, is_dir: bool = True) -> Iterator[Path]:
    """Hold the exclusive lock of ``out`` for the block (re-entrant within a process)."""
    path = lock_path(out, is_dir=is_dir).resolve()
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield path
        finally:
            _HELD[path] -= 1
        return
    fd = _acquire(path)
    _HELD[path] = 1
    try:
        yield path
    finally:
        del _HELD[path]
        with contextlib.suppress(OSError):
            os.unlink(path)  # still holding the lock, so no one else is mid-acquire on it
        os.close(fd)


def _acquire(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise MechReasonError(
                f"{str(path.parent if path.name == LOCK_NAME else path.with_suffix(''))!r} "
                f"is being written by another mechreason job ({who}); wait for it to "
                f"finish or choose another output (lock {str(path)!r})") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its previous holder unlinked while we opened it
            break
        os.close(fd)
    old = _read_pid(fd)
    if old and old != os.getpid():
        log.warning("taking over the lock %s left by pid %d, which is no longer running",
                    path, old)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------- up-front checks


def min_free_bytes() -> int:
    raw = os.environ.get(MIN_FREE_ENV)
    try:
        mb = float(raw) if raw else MIN_FREE_MB
    except ValueError:
        raise MechReasonError(f"${MIN_FREE_ENV}={raw!r} is not a number of MiB") from None
    return int(mb * 2**20)


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists():
        p = p.parent
    return p


def _check_location(path: Path, flag: str, need: int) -> None:
    base = _existing_ancestor(path)
    if not base.is_dir():
        raise MechReasonError(f"{flag} {str(path)!r}: {str(base)!r} is a file, not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise MechReasonError(f"{flag} {str(path)!r} is not writable (no write permission on "
                              f"{str(base)!r}, or a read-only file system)")
    st = os.statvfs(base)
    if st.f_flag & os.ST_RDONLY:
        raise MechReasonError(f"{flag} {str(path)!r} is on a read-only file system")
    free = shutil.disk_usage(base).free
    need = max(need, min_free_bytes())
    if free < need:
        raise MechReasonError(
            f"{flag} {str(path)!r}: only {free / 2**20:.1f} MiB free on its disk, this job "
            f"needs at least {need / 2**20:.1f} MiB (set ${MIN_FREE_ENV} to change the "
            "minimum)")


def check_out_dir(path: str | os.PathLike[str], *, flag: str = "--out", need: int = 0) -> Path:
    """Refuse an output directory that is a file, unwritable, or on a too-full disk."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise MechReasonError(f"{flag} {str(p)!r} is an existing file; it needs a directory "
                              "(a new or existing one)")
    _check_location(p, flag, need)
    return p


def check_out_file(path: str | os.PathLike[str], *, flag: str = "--out", need: int = 0) -> Path:
    """Refuse an output file that is a directory, unwritable, or on a too-full disk."""
    p = Path(path)
    if p.is_dir():
        raise MechReasonError(f"{flag} {str(p)!r} is a directory; it needs a file name")
    if p.exists() and not os.access(p, os.W_OK):
        raise MechReasonError(f"{flag} {str(p)!r} is not writable")
    _check_location(p.parent, flag, need)
    return p


# ----------------------------------------------------------------- disk full mid-run


def is_disk_full(exc: BaseException, where: str | os.PathLike[str] | None = None) -> bool:
    """Whether ``exc`` came from a full disk (OSError 28, or the wrapped forms that
    safetensors and torch.save raise)."""
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        return True
    text = str(exc)
    if any(s in text for s in ("No space left", "StorageFull", "code: 28", "Disk quota")):
        return True
    if where is not None and "write" in text.lower():
        try:
            return shutil.disk_usage(_existing_ancestor(Path(where))).free < 1 << 16
        except OSError:
            return False
    return False


def disk_full_error(path: str | os.PathLike[str]) -> MechReasonError:
    return MechReasonError(
        f"disk full while writing {str(path)!r}; nothing partial was kept: free some space "
        "and re-run the same command to resume")


@contextlib.contextmanager
def disk_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a full disk or a read-only file system inside the block into one clear error."""
    try:
        yield
    except MechReasonError:
        raise
    except Exception as e:
        if is_disk_full(e, Path(path).parent):
            raise disk_full_error(path) from e
        if isinstance(e, OSError) and e.errno == errno.EROFS:
            raise MechReasonError(f"cannot write {str(path)!r}: read-only file system") from e
        raise


# ----------------------------------------------------------------- fingerprints

FINGERPRINT_JSON = "fingerprint.json"


def check_fingerprint(out_dir: str | os.PathLike[str], fingerprint: dict[str, object],
                      *, what: str = "output") -> None:
    """Record what made ``out_dir`` (input hashes, weights hash, every setting that
    changes results) on its first run; on a later run refuse any difference, naming it."""
    from mechreason.artifacts import read_json, to_jsonable, write_json

    path = Path(out_dir) / FINGERPRINT_JSON
    want = to_jsonable(fingerprint)
    if not path.is_file():
        write_json(path, want)
        return
    have = read_json(path, "fingerprint")
    diff = fingerprint_diff(have, want)
    if diff:
        raise MechReasonError(
            f"{str(out_dir)!r} holds a {what} made from other inputs or settings ({diff}); "
            "resuming would mix the two: use another output or delete it")


def fingerprint_diff(have: object, want: object, prefix: str = "") -> str:
    """The first difference between two fingerprints, as ``key was X, now Y``."""
    if isinstance(have, dict) and isinstance(want, dict):
        for k in sorted(set(have) | set(want)):
            if k in have and k in want:
                d = fingerprint_diff(have[k], want[k], f"{prefix}{k}.")
                if d:
                    return d
            elif k in want and k not in have:
                continue  # recorded by an older mechreason: nothing to compare
            else:
                return f"{prefix}{k} was {have[k]!r}, now absent"
        return ""
    if have != want:
        short = [repr(x) if len(repr(x)) <= 40 else repr(x)[:37] + "..." for x in (have, want)]
        return f"{prefix.rstrip('.') or 'value'} was {short[0]}, now {short[1]}"
    return ""


def sha256_of(obj: object) -> str:
    """A content hash of JSON-able data (item ids and token ids, a trace, ...)."""
    import hashlib
    import json

    from mechreason.artifacts import to_jsonable

    blob = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
