"""Writing files safely: atomically (a temporary file renamed into place), into folders checked
beforehand, and removing the empty folders a failed run made. Below every stage: the spectra of optvis,
run's outputs and the atlas all write through it."""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from fvcli.errors import FvError, WriteError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what a plain open() would give; mkstemp's files are private (0600)


class Cancelled(Exception):
    """An atomic write stopped by its thread's Cancel: nothing was put in place."""


class Cancel:
    """Lets one thread stop the atomic writes of another at once (fvcli.run.writer: a second signal
    does not wait for the writing thread). After cancel(), the temporary files being filled are
    gone, and that thread's atomic_write neither renames a file into place nor starts one."""

    def __init__(self):
        self._lock = threading.Lock()
        self._temporaries: set[str] = set()
        self.cancelled = False

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            for tmp in self._temporaries:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def watch(self) -> None:
        """The calling thread's atomic writes obey this Cancel."""
        _thread.cancel = self


_thread = threading.local()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` to fill a temporary file beside `path`, then rename it to `path`.
    WriteError (naming `path`) when the file system refuses; the temporary file is removed.
    Cancelled when the thread's Cancel (if any) was cancelled: then `path` is left as it was."""
    cancel = getattr(_thread, "cancel", None) or Cancel()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # never renamed over a device, FIFO or folder (as root, over /dev/null)
            kind = os.lstat(path).st_mode
            if not (stat.S_ISREG(kind) or stat.S_ISLNK(kind)):
                raise OSError(errno.EEXIST, "exists and is not a regular file")
        except FileNotFoundError:
            pass
        with cancel._lock:  # cancel() removes what it finds registered, and nothing starts after it
            if cancel.cancelled:
                raise Cancelled(path)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            cancel._temporaries.add(tmp)
        os.close(fd)
        write(Path(tmp))
        os.chmod(tmp, FILE_MODE)
        with cancel._lock:
            if cancel.cancelled:
                raise Cancelled(path)
            os.replace(tmp, path)
            cancel._temporaries.discard(tmp)
    except BaseException as error:
        if tmp is not None:
            with cancel._lock:
                cancel._temporaries.discard(tmp)
                try:
                    os.unlink(tmp)
                except OSError:
                    pass  # already renamed or removed, or the file system refuses even this
        if isinstance(error, OSError):
            raise WriteError(path, error) from None
        raise


def read_at_most(path: os.PathLike | str, limit: int) -> bytes:
    """A file's bytes, refused from its size before any is read when it holds more than `limit`
    bytes (ValueError that says so): a sparse file of 100 GB costs nothing on disk and would fill
    memory. At most limit + 1 bytes are read, in case the file grows meanwhile."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size > limit:
            raise ValueError(f"a file of {size:,} bytes; fv reads at most {limit:,}")
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"a file of more than {limit:,} bytes; fv reads at most {limit:,}")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise ValueError(f"{text} is out of range")
    return value


def parse_json(text: str | bytes) -> Any:
    """JSON as fv reads its own files back (sidecars, manifests, the tuning cache): ValueError, never
    another error, for anything that is not plain JSON. NaN and Infinity (which Python's json takes)
    are refused, numbers that overflow to infinity too, and so is nesting deep enough to exhaust Python's recursion (RecursionError)."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None


# A file fv keeps beside its output (a lock, the tuning cache's lock) is opened without following a
# symbolic link in its place, and without waiting on a FIFO: either would let whoever made the link
# or FIFO point fv's writes at another file, or stop fv forever.
SAFE_OPEN = os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def open_regular(path: Path, flags: int, mode: int = 0o644, follow: bool = False) -> int:
    """os.open(path, flags) for a regular file only: a symbolic link (unless `follow`), FIFO, device
    or folder in its place raises OSError (ELOOP, or EINVAL with a message that says what is there)."""
    fd = os.open(path, flags | (SAFE_OPEN & ~os.O_NOFOLLOW if follow else SAFE_OPEN), mode)
    kind = os.fstat(fd).st_mode
    if not stat.S_ISREG(kind):
        os.close(fd)
        what = "a FIFO" if stat.S_ISFIFO(kind) else "a device" if stat.S_ISCHR(kind) or stat.S_ISBLK(kind) else "not a regular file"
        raise OSError(errno.EINVAL, f"{path} is {what}; fv keeps a regular file there")
    os.set_blocking(fd, True)
    return fd


def in_one_line(error: BaseException) -> str:
    """An error in a few words for a one-line message: an OSError's own words (without
    '[Errno N]'), else the first line of its text, at most 160 characters."""
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return (text.splitlines() or [""])[0][:160]


MAX_READ_BACK = 1 << 30  # the most fv reads of a file it wrote (a sidecar, manifest, unit PNG, state)


def read_back(path: Path, limit: int = MAX_READ_BACK, follow: bool = True) -> bytes:
    """A file fv wrote, read back whole (grid.json, a shard manifest, a unit's PNG, examples.json,
    a checkpoint, atlas-settings.json): a regular file of at most `limit` bytes, else OSError. A
    FIFO in its place would stop the read forever, and a sparse file of 20 GB would fill the
    memory. `follow=False` refuses a symbolic link too (fvcli.owned)."""
    fd = open_regular(path, os.O_RDONLY, follow=follow)
    with os.fdopen(fd, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size > limit:
            # The reason before the path: a one-line message cuts a long path's end, not the reason.
            raise OSError(errno.EFBIG, f"{size:,} bytes, more than fv writes there (at most {limit:,}): {path}")
        data = file.read(limit + 1)  # bounded, should it grow meanwhile
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"grew past {limit:,} bytes while it was read: {path}")
    return data


def check_output_folders(folders: list[tuple[Path, str]], writable: bool = True) -> None:
    """FvError unless every (folder, origin) could be written and no two origins share a folder.
    Nothing is left behind: a probe file is created and removed in the deepest folder that exists
    (os.access does not see read-only or full file systems, nor /proc), and a bad later folder must
    not leave earlier ones behind. `writable=False` (a dry run, which writes nothing) skips the
    permission checks."""
    seen: dict[Path, str] = {}
    for folder, origin in folders:
        resolved = folder.resolve()
        if resolved in seen:
            raise FvError(f"{origin} and {seen[resolved]} would both write {folder}; give one of them a 'name:'")
        seen[resolved] = origin
        existing = next(p for p in (resolved, *resolved.parents) if _exists(p))
        if not existing.is_dir():
            raise FvError(f"cannot write to output folder {folder}: {existing} is a file, not a folder")
        if writable and not os.access(existing, os.W_OK | os.X_OK):
            raise FvError(f"cannot write to output folder {folder}: {existing} is not writable")
        name_max = _name_max(existing)
        for part in resolved.relative_to(existing).parts:
            if len(os.fsencode(part)) > name_max:
                raise FvError(f"cannot write to output folder {folder}: a name in it is longer than {name_max} bytes ({part[:40]}...)")
        # Room for the files in it too (their names are at most about 100 bytes: targets.safe_component)
        if len(os.fsencode(resolved)) + 128 > _path_max(existing):
            raise FvError(f"cannot write to output folder {folder}: its path is longer than {_path_max(existing) - 128} bytes; choose a shorter --out")
        if not writable:
            continue
        try:
            fd, probe = tempfile.mkstemp(prefix=".fv-probe-", dir=existing)
            os.close(fd)
            os.unlink(probe)
        except OSError as error:
            raise FvError(f"cannot write to output folder {folder}: {error.strerror or error} in {existing} [Errno {error.errno}]") from None


def _exists(path: Path) -> bool:
    """Whether `path` exists; a name too long to look up (ENAMETOOLONG) does not, and the caller
    then measures it against the limit."""
    try:
        return path.exists()
    except OSError:
        return False


def _path_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        return 4096


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def remove_empty_folders(folder: Path, stop: Path) -> None:
    """Remove `folder` and its parents below `stop` while they are empty (what a failed run made)."""
    folder, stop = folder.absolute(), stop.absolute()
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty, or not ours to remove
            return
        folder = folder.parent
