"""Modules called more than once per forward pass: a layer per call.

torchvision's ResNet blocks call one `relu` two or three times (after `bn1`, and after the residual
sum); many hand-written models reuse one activation module. Each call is its own layer: the bare
module path names the first call, and `PATH_callK` the K-th (K from 2), so that a model whose
modules are called once keeps the names it always had.
"""

from __future__ import annotations

import re
from typing import Container

CALL = "_call"
_CALLED = re.compile(r"(.+)_call([2-9]|[1-9][0-9]+)")


def module_call(modules: Container[str], path: str) -> tuple[str, int]:
    """The module a layer path reads and which call of it (1 for the first): `layer1.0.relu_call2`
    -> (`layer1.0.relu`, 2), unless a module has that full name (a real module's name wins)."""
    if path in modules:
        return path, 1
    match = _CALLED.fullmatch(path)
    if match and match.group(1) in modules:
        return match.group(1), int(match.group(2))
    return path, 1


def call_name(path: str, call: int) -> str:
    """The layer name of a module's `call`-th call: the path itself for the first."""
    return path if call == 1 else f"{path}{CALL}{call}"
