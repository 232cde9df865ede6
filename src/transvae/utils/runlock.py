"""One process per run folder: an OS file lock held for the life of a run.

``RunLock(run_dir)`` takes an exclusive POSIX lock (``fcntl.lockf``, which also works on NFS
with a lock daemon) on ``RUN_DIR/.lock`` and writes the holder's PID and host into it. The
operating system releases the lock when the process ends in any way (normal exit, exception,
SIGTERM, SIGKILL, power loss of a client), so a lock can never outlive its holder: a ``.lock``
file left by a dead process is *stale*, is detected as such (it is not locked) and is taken
over. A second process that finds the lock held fails at once with ``RunLockedError`` naming
the holder's PID.

Used by every kind of training run (``transvae train``, ``transvae gen-train``): two processes
writing one run folder would interleave ``metrics.jsonl`` and move the checkpoint backwards.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "lock_holder"]

LOCK_NAME = ".lock"
# run folders locked by this process: POSIX locks never conflict within one process (and closing
# any descriptor of the file would drop them), so a second lock of the same folder in the same
# process is refused here instead
_HELD: set[str] = set()


class RunLockedError(RuntimeError):
    """Another live process holds the run folder's lock; the message names its PID."""

    def __init__(self, run_dir: Path, holder: str):
        self.run_dir, self.holder = run_dir, holder
        super().__init__(
            f"run folder {run_dir} is in use by another process ({holder}); wait for it to finish, "
            f"stop it, or choose another --out"
        )


def _describe(text: str) -> str:
    """``"pid 123 on host"`` from the lock file's content (``"123 host"``), or ``"pid unknown"``."""
    parts = text.split()
    if parts and parts[0].isdigit():
        return f"PID {parts[0]}" + (f" on {parts[1]}" if len(parts) > 1 else "")
    return "PID unknown"


class RunLock:
    """Exclusive lock of a run folder (a context manager; ``acquire`` / ``release`` also work).

    Args:
        run_dir: the run folder (created if missing).
    Attributes:
        stale: after ``acquire``, the description of a dead previous holder whose lock file was
            taken over (``"PID 123 on host"``), else None.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self.stale: str | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock or raise ``RunLockedError`` (never waits)."""
        import fcntl

        if self._fd is not None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        if key in _HELD:
            raise RunLockedError(self.run_dir, f"PID {os.getpid()} on {socket.gethostname()}, this process")
        try:  # never through a link: a planted .lock link would have its target truncated
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise OSError(e.errno, f"{self.path} is a symbolic link; refusing to lock through it") from e
            raise
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 256, 0).decode(errors="replace")
            os.close(fd)
            if e.errno in (errno.EACCES, errno.EAGAIN):
                raise RunLockedError(self.run_dir, _describe(holder)) from None
            raise
        previous = os.pread(fd, 256, 0).decode(errors="replace").strip()
        self.stale = _describe(previous) if previous else None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        _HELD.add(key)
        return self

    def release(self) -> None:
        """Release the lock (the file stays; its content no longer matters once unlocked)."""
        if self._fd is None:
            return
        import fcntl

        fd, self._fd = self._fd, None
        _HELD.discard(str(self.path.resolve()))
        try:
            os.ftruncate(fd, 0)
            fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # interpreter shutdown: the OS releases the lock with the process
            pass


def lock_holder(run_dir: str | os.PathLike) -> str | None:
    """Who holds ``run_dir``'s lock (``"PID 123 on host"``), or None when nobody does.

    A probe for early, friendly errors; only ``RunLock.acquire`` is race-free.
    """
    import fcntl

    path = Path(run_dir) / LOCK_NAME
    if path.exists() and str(path.resolve()) in _HELD:  # held by this very process
        return f"PID {os.getpid()} on {socket.gethostname()}, this process"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        # a read-only descriptor cannot take an exclusive lockf lock: ask with F_GETLK semantics
        # through a shared probe instead (a held exclusive lock refuses it)
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN):
            return _describe(os.pread(fd, 256, 0).decode(errors="replace"))
        return None
    finally:
        os.close(fd)
    return None
