"""Atomic file writing: a crash, a SIGKILL or a full disk never leaves half a file behind.

Files are written to a temporary name in the target folder, fsynced and renamed over the
target (``os.replace`` is atomic on POSIX), then the folder is fsynced. The final file gets
the permissions an ordinary ``open(path, "w")`` would give (``0o666`` minus the process
umask), not ``mkstemp``'s private ``0o600``: on a shared cluster, extracted latents, configs
and models stay readable by the group exactly as the user's umask says.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "DiskFullError",
    "open_nofollow",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable",
    "default_file_mode",
]


class DiskFullError(OSError):
    """Writing failed because the file system is full, over quota or refuses a file that large;
    the message says so."""


def default_file_mode() -> int:
    """``0o666 & ~umask``: the mode ``open(path, "w")`` would create a file with."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; when the block succeeds, fsync it, give it the umask's
    permissions and rename it over ``path`` (then fsync the folder). A crash at any moment leaves
    either the old file or the new one, never half a file; on error the temp file is removed.

    Raises:
        DiskFullError: the disk filled up while writing (ENOSPC / EDQUOT), with a message that
            says so and names the file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        try:
            yield Path(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise DiskFullError(
                    e.errno, f"disk full ({os.strerror(e.errno)}) while writing {path}"
                ) from e
            raise
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def open_nofollow(path: str | os.PathLike, mode: str = "a"):
    """Open ``path`` for appending (``"a"``) or writing (``"w"``) text, refusing to follow a
    symbolic link at ``path`` itself (``O_NOFOLLOW``): a planted link cannot make us write a file
    elsewhere.

    Raises:
        OSError: ``ELOOP`` with a message naming the link.
    """
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    flags |= os.O_APPEND if mode == "a" else os.O_TRUNC
    try:
        fd = os.open(path, flags, default_file_mode())
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(e.errno, f"{path} is a symbolic link; refusing to write through it") from e
        raise
    return os.fdopen(fd, mode, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see ``atomic_path``)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable(folder: str | os.PathLike, needed_bytes: int = 0, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and prove it takes files before any work starts: a small probe
    is written atomically and removed, and the free space is compared with ``needed_bytes``.

    Args:
        folder: the folder outputs will be written to.
        needed_bytes: an estimate of what the outputs need (0: only the probe).
        what: how messages name the folder (``"--out"``, ``"run folder"``).
    Returns:
        the folder as a Path.
    Raises:
        DiskFullError: the probe could not be written because the disk is full, or the free space
            is below ``needed_bytes`` (message says "disk full" / "not enough free space").
        OSError: the folder is a file, lies under a file, or is not writable (message names it).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OSError(errno.ENOTDIR, f"{what} {folder} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".transvae-write-probe-{os.getpid()}"
        atomic_write_bytes(probe, b"\0" * 4096)
        probe.unlink()
    except DiskFullError:
        raise
    except OSError as e:
        raise OSError(e.errno, f"{what} {folder} is not writable ({e.strerror or e})") from e
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise DiskFullError(
            errno.ENOSPC,
            f"disk full: not enough free space in {what} {folder}: {free / 2**20:.0f} MiB free, "
            f"the outputs need about {needed_bytes / 2**20:.0f} MiB",
        )
    return folder
