"""One run at a time in a job folder: an advisory lock (flock) on JOB/.fv-lock.

A run takes it exclusively. A shard (--shard I/N, a SLURM array task, a torchrun rank) takes it
shared, and its own JOB/.fv-lock.shard-I-of-N exclusively: the shards of a run write one folder
together, while a whole run beside them, or the same shard twice, is refused. Worker processes
(--workers) render under their parent's lock. A second run does not wait: it exits at once (exit
status 2, which suits cron). The kernel drops a lock when its process dies, kill -9 included, so
a lock file left behind never blocks; the last holder removes it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from fvcli.errors import FvError
from fvcli.files import open_regular, remove_empty_folders

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked
    fcntl = None

LOCK_NAME = ".fv-lock"


class FolderLocks:
    """Hold the locks of a run's job folders (made when missing, removed again when left empty)."""

    def __init__(self, folders: list[Path], shard: tuple[int, int] | None):
        self.folders, self.shard = list(dict.fromkeys(folders)), shard
        self.held: list[tuple[Path, int]] = []
        self.made: list[tuple[Path, Path]] = []  # (folder, the deepest folder that existed before)

    def __enter__(self) -> FolderLocks:
        if fcntl is None:
            return self
        try:
            for folder in self.folders:
                existed = next(p for p in (folder, *folder.parents) if p.exists())
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as error:
                    raise FvError(f"cannot write to output folder {folder}: {error.strerror or error} [Errno {error.errno}]") from None
                self.made.append((folder, existed))
                if self.shard is None:
                    self._take(folder, LOCK_NAME, fcntl.LOCK_EX, "is writing")
                else:
                    self._take(folder, LOCK_NAME, fcntl.LOCK_SH, "is writing")
                    name = "{}.shard-{}-of-{}".format(LOCK_NAME, *self.shard)
                    self._take(folder, name, fcntl.LOCK_EX, "is rendering shard {}/{} into".format(*self.shard))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        while self.held:
            path, fd = self.held.pop()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else holds it: remove the file
                os.unlink(path)
            except OSError:
                pass  # another shard still holds it, and removes it when it is done
            os.close(fd)
        for folder, existed in reversed(self.made):
            remove_empty_folders(folder, existed)
        self.made.clear()

    def _take(self, folder: Path, name: str, mode: int, doing: str, wait: bool = False) -> None:
        """Lock FOLDER/NAME (`mode`: shared or exclusive); a run holding it already is refused in
        one line (`doing` says what it does), or with `wait`, waited for."""
        path = folder / name
        while True:
            try:
                # Read-only: flock needs no more, and a file held open for writing would keep the
                # file system from being remounted read-only.
                fd = open_regular(path, os.O_RDONLY | os.O_CREAT)
            except OSError as error:
                if error.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
                    raise FvError(f"{path} is a symbolic link; fv keeps a regular lock file there: remove the link") from None
                if error.errno == errno.EINVAL and error.strerror and "fv keeps" in error.strerror:
                    raise FvError(f"{error.strerror}: remove it") from None
                raise FvError(f"cannot write to output folder {folder}: {error.strerror or error} [Errno {error.errno}]") from None
            try:
                fcntl.flock(fd, mode if wait else mode | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _pid_in(fd)
                os.close(fd)
                who = f"another fv run (PID {holder})" if holder else "another fv run"
                raise FvError(f"{who} {doing} {folder}; wait for it to finish, or render into another --out") from None
            try:  # the last holder may have removed the file between open and flock: lock the new one
                current = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        try:  # for the message another run would print; the file fv holds, not what a link names
            writer = open_regular(path, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(writer, f"{os.getpid()}\n".encode())
            finally:
                os.close(writer)
        except OSError:
            pass
        self.held.append((path, fd))


class TakenInTurn(FolderLocks):
    """FOLDER/NAME locked exclusively, waiting for whoever holds it: work that the shards of a run
    do once for all of them (an activation atlas's layout) is done by the first, and the others,
    which waited, find it done. Removed by its last holder, as the folder lock is."""

    def __init__(self, folder: Path, name: str):
        super().__init__([folder], None)
        self.name = name

    def __enter__(self) -> TakenInTurn:
        if fcntl is not None:
            self._take(self.folders[0], self.name, fcntl.LOCK_EX, "", wait=True)
        return self


def _pid_in(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text.isdigit() else None
    except (OSError, ValueError):
        return None
