"""Crash-safe writes: a file or a directory is written whole or not at all (a temp file or directory beside it,
fsynced, renamed over the target, the parent fsynced), and a full disk is one clear error with nothing
half-written left behind."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from tinykd import distributed
from tinykd.errors import TinyKDError


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in `directory` durable (a crash after it keeps it)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_full(path: Path, error: OSError, kept: str = "") -> TinyKDError:
    """The one message for a write that ran out of space (ENOSPC) or quota (EDQUOT)."""
    import shutil

    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    return TinyKDError(
        f"No space left to write {path} ({error.strerror}; {free} on that disk). Nothing half-written was left "
        f"there{kept}.",
        "free space on that disk (or point paths.runs / paths.cache at another one), then run the same command "
        "again (with resume=true to continue from the last checkpoint).")


def atomic_write(path: Path, write, *, mode: int = 0o644, kept: str = "") -> None:
    """Write `path` whole or not at all: `write(tmp_path)` fills a temp file beside it, which is fsynced,
    renamed over `path`, and the directory fsynced; on any failure the temp file is removed and `path`
    is as it was. A full disk is a `TinyKDError` (`disk_full`); `kept` names what is intact."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600; a run directory is meant to be shared and read
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(path, e, kept) from None
        raise
    fsync_dir(path.parent)


def atomic_directory(out: Path, fill, *, kept: str = "", if_exists: str = "replace") -> bool:
    """Write the directory `out` whole or not at all: `fill(tmp)` fills a temp directory beside it, whose
    files are fsynced before it is renamed to `out` (the parent fsynced after). On any failure the temp
    directory is removed and `out` is as it was; a full disk is a `TinyKDError` (`disk_full`; `kept` names
    what is intact). An existing `out` is replaced (`if_exists="replace"`: moved aside, then deleted) or
    kept (`"keep"`: another process wrote the same entry first; False is returned)."""
    import shutil

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        fill(tmp)
        for f in tmp.rglob("*"):  # every file on disk before the directory counts as written
            if f.is_file():
                with open(f, "rb+") as handle:
                    os.fsync(handle.fileno())
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(out, e, kept) from None
        raise
    old = out.with_name(f".{out.name}-old")
    if if_exists == "keep":
        try:
            os.replace(tmp, out)  # fails when another process put its copy there first
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if out.exists():
                return False
            raise
        fsync_dir(out.parent)
        return True
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(out.parent)
    return True


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file whole or not at all (`atomic_write`; rank 0 only in a job of several ranks)."""
    if not distributed.is_main():
        return

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()

    atomic_write(path, write)
