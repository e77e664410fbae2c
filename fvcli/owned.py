"""What fv may delete or overwrite: only a file it can prove it wrote (a record inside the file, or
a listing in a manifest of fv's own), reached without leaving the folder it works in. A user's own
file beside fv's (`units/my-notes.html`, `atlas-samples/cell_099_099.png`) carries no such proof
and stays, and a symbolic link in fv's place is never followed out of the output folder: every
removal of a file fv once wrote goes through `remove_own`, and a folder fv writes into below a job
folder is checked by `within` first."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable

from fvcli.files import read_back

Proof = Callable[[Path, bytes], bool]  # whether fv wrote this file: its path and its bytes

MAX_PROVEN = 1 << 26  # no file fv removes or overwrites by proof is larger (64 MiB: a page, a strip, a PNG)


def within(path: Path, root: Path) -> bool:
    """Whether `path` stays inside `root` with every link in between resolved: a folder fv writes
    into (`JOB/atlas-samples`) that is a link to elsewhere is not within its job folder."""
    try:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))
    except (OSError, ValueError):  # a loop of links, a NUL byte
        return False


def proven(path: Path, root: Path, proof: Proof) -> bool:
    """Whether `path` is a regular file (not a link) inside `root` that `proof` shows fv wrote."""
    try:
        kind = os.lstat(path).st_mode
    except (OSError, ValueError):
        return False
    if not stat.S_ISREG(kind) or not within(path.parent, root):
        return False
    try:
        data = read_back(path, MAX_PROVEN, follow=False)
    except OSError:
        return False
    return proof(path, data)


def remove_own(path: Path, root: Path, proof: Proof) -> bool:
    """Remove `path` when it is proven fv's (see proven); True when it was removed."""
    if not proven(path, root, proof):
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def replaceable(path: Path, root: Path, proof: Proof) -> bool:
    """Whether fv may write `path`: nothing is there yet, or a file fv is proven to have written.
    A link, a folder or a user's file in its place is not replaced."""
    if not within(path.parent, root):
        return False
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    return proven(path, root, proof)
