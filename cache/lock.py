"""One writer per cache directory: a lock file that says who holds it.

Two `pipeline embed` runs into the same --out would both do the whole job (and race on the
manifest), so a writer takes an exclusive `flock` on `embed.lock` in the directory before it
loads the teacher. The kernel drops a flock when its holder dies, however it dies, so a lock
left by a killed run is simply taken over; the file's text (pid, host, start time, command)
only serves to tell the user who holds a live one.

Under torchrun each rank locks its own file (`embed.rank1.lock`, ...): two jobs into one
folder then fail on every rank, not only on rank 0.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from cache.errors import CacheError

LOCK_NAME = "embed.lock"


def lock_name(rank: int = 0) -> str:
    return LOCK_NAME if rank == 0 else f"embed.rank{rank}.lock"


def is_lock_file(name: str) -> bool:
    return name == LOCK_NAME or (name.startswith("embed.rank") and name.endswith(".lock"))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class CacheLock:
    """Context manager: create `directory` if needed and hold its writer lock.

    On release the lock file is removed, and so is the directory when this lock created it
    and nothing else was left in it (a run that failed before writing anything leaves no trace).
    """

    def __init__(self, directory: str | Path, rank: int = 0) -> None:
        self.directory = Path(directory)
        self.path = self.directory / lock_name(rank)
        self.previous: dict[str, Any] | None = None  # the dead holder this lock took over from
        self._fd: int | None = None
        self._created_directory = False

    def __enter__(self) -> CacheLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        self._make_directory()
        import fcntl

        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise _unwritable(self.directory, e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = describe_holder(_read_holder(fd))
                os.close(fd)
                raise CacheError(
                    f"{self.directory} is being written by another run ({holder}); "
                    "wait for it to finish, or stop it and rerun"
                ) from None
            except OSError:
                # A filesystem without flock (some network mounts): go on unlocked rather than
                # refuse to work at all.
                break
            # A releasing holder unlinks the file before closing it: if we locked that old
            # inode, the name now points elsewhere (or nowhere) and we must lock again.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        previous = _read_holder(fd)
        if previous:
            self.previous = previous
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # before closing: nobody can lock a name we still hold
        os.close(self._fd)
        self._fd = None
        if self._created_directory:
            with contextlib.suppress(OSError):  # not empty: keep it
                self.directory.rmdir()

    def _make_directory(self) -> None:
        if self.directory.exists() and not self.directory.is_dir():
            raise CacheError(f"{self.directory} is a file, not a directory; choose another --out")
        try:
            if not self.directory.exists():
                self.directory.mkdir(parents=True)
                self._created_directory = True
        except FileExistsError:
            pass  # created by someone else just now: fine
        except OSError as e:
            raise _unwritable(self.directory, e) from None


def describe_holder(holder: dict[str, Any] | None) -> str:
    """`pid 123 on host h since T: pipeline embed ...`, from a lock file's text."""
    if not holder:
        return "a process that left no details"
    text = f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('started')}"
    if holder.get("command"):
        text += f": {holder['command']}"
    return text


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _unwritable(directory: Path, e: OSError) -> CacheError:
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CacheError(
            f"cannot write to {directory} ({e.strerror}); choose a writable folder for --out"
        )
    return CacheError(f"cannot create or lock {directory}: {e.strerror or e}")
