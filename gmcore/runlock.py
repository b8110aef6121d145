"""An exclusive, advisory lock on a run folder: one training run owns a folder at a time.

The lock is the file ``run.lock`` in the folder, locked with ``fcntl.flock`` and holding the
owner's PID, host and start time. The operating system drops the lock when its process dies
however it dies (SIGKILL included), so a ``run.lock`` that exists but is not locked was left by
a dead run: it is reclaimed, with a message naming that run. A clean release deletes the file.
Reading a locked folder (``gmcore sample``, ``gmcore eval``) needs no lock: a checkpoint is
replaced by one atomic rename, so readers always find a complete one.

Where ``fcntl`` is missing (Windows), the file is created with ``O_EXCL`` instead; a dead run's
lock cannot be told from a live one there, so the message says which file to delete.

>>> import tempfile
>>> with RunLock(tempfile.mkdtemp()) as lock:
...     lock.path.name
'run.lock'
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["RunLock", "RunLockedError", "LOCK_NAME", "is_locked"]

LOCK_NAME = "run.lock"


class RunLockedError(FileExistsError):
    """The run folder is owned by another training run that is still alive."""


def _describe(text: str) -> tuple[str, int | None]:
    """('PID 12 on host h since ...', pid) from a lock file's contents."""
    try:
        info = json.loads(text)
        pid, host, started = int(info["pid"]), str(info["host"]), str(info.get("started", "?"))
    except (ValueError, TypeError, KeyError):
        return "an unknown process (unreadable lock file)", None
    return f"PID {pid} on host {host}, started {started}", pid


class RunLock:
    """Exclusive lock on ``folder`` (created if missing); ``log`` receives the reclaim message.

    ``acquire`` raises :class:`RunLockedError` naming the folder and the holder's PID and host.
    """

    def __init__(self, folder, log=print):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.log = log
        self._fd = None
        self._created_folder = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            return self
        self._created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = self._lock_fcntl() if fcntl is not None else self._lock_excl()
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (info + "\n").encode("utf-8"))
        self._fd = fd
        return self

    def _refuse(self, text: str, hint: str = ""):
        holder, _ = _describe(text)
        raise RunLockedError(f"run folder {self.folder} is in use by another training run ({holder})"
                             f"{hint}; wait for it to finish or pass another --out")

    def _lock_fcntl(self) -> int:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                text = _read_fd(fd)
                os.close(fd)
                self._refuse(text)
            # The previous owner deletes the file when it lets go; if that happened between our
            # open and our lock, we hold a lock on a deleted file: start over on the new one.
            try:
                st, now = os.fstat(fd), os.stat(self.path)
                same = (st.st_ino, st.st_dev) == (now.st_ino, now.st_dev)
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        old = _read_fd(fd)
        if old.strip():   # unlocked but not deleted: its owner died without releasing it
            holder, _ = _describe(old)
            self.log(f"{self.path}: reclaimed the stale lock of a run that is no longer running "
                     f"({holder})")
        return fd

    def _lock_excl(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                text = self.path.read_text("utf-8")
            except OSError:
                text = ""
            self._refuse(text, f"; if that process is no longer running, delete {self.path}")

    def release(self) -> None:
        """Delete the lock file and let go (deleting first: see the check in acquire)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            try:
                st, now = os.fstat(fd), os.stat(self.path)
                if (st.st_ino, st.st_dev) == (now.st_ino, now.st_dev) or fcntl is None:
                    os.unlink(self.path)
            except FileNotFoundError:
                pass
        finally:
            os.close(fd)   # closing drops the flock
        if self._created_folder:   # leave no empty folder behind a run that never started
            try:
                self.folder.rmdir()
            except OSError:
                pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(folder) -> bool:
    """Whether a live run holds ``folder``'s lock (a stale ``run.lock`` is not). Without
    ``fcntl`` a lock file cannot be told from a stale one: its presence counts."""
    path = Path(folder) / LOCK_NAME
    if fcntl is None:
        return path.exists()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)   # (closing drops the shared lock we may have taken)
    return False


def _read_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        b = os.read(fd, 4096)
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks).decode("utf-8", errors="replace")
