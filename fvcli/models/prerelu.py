"""Pre-ReLU twins: `LAYER_pre_relu`, a layer's values before the ReLU that made them.

Lucid names these (`mixed4a_pre_relu`), and the article's negative images minimize them: after a
ReLU, a channel already at 0 has nothing left to lower. A layer has a twin when its output is a
ReLU's output (an nn.ReLU, a block whose forward ends in F.relu, a Sequential ending in either) or a
concatenation of ReLU outputs (an Inception block); the twin is the ReLU's input, or the inputs
concatenated in the same order, so that relu(twin) == layer.

Twins are found by watching the forward pass, not by reading a model's code: a torch function mode
sees every relu and cat call and remembers what each ReLU received, and a forward hook on the layer
looks its output up. So any model has the twins its structure allows, with no table per model. The
watch copies the input of every in-place ReLU (torchvision's GoogLeNet, ResNets) before it is
overwritten, so it runs only for forward passes that read a twin. A graph traced for torch.compile
makes no such calls: twins are always read eagerly.
"""

from __future__ import annotations

from typing import Container

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from fvcli.models.calls import module_call

SUFFIX = "_pre_relu"
RELUS = {F.relu, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_}  # every way to call a ReLU (nn.ReLU calls F.relu)
_IN_PLACE = {torch.relu_, Tensor.relu_}
_CATS = {torch.cat, torch.concat, torch.concatenate}


def twin_base(modules: Container[str], key: str) -> str | None:
    """The module path whose twin a layer key names (`inception4a_pre_relu` -> `inception4a`), or
    None: a module of its own (a real module's name wins), an element of a tuple output, or no twin."""
    if "@" in key or key in modules or not key.endswith(SUFFIX):
        return None
    base = key[: -len(SUFFIX)]
    return base if base and (base in modules or module_call(modules, base)[1] > 1) else None


class Watch(TorchFunctionMode):
    """Within this context, remembers the input of every ReLU call, and which concatenations join
    ReLU outputs only; `before(output)` then gives the twin of a tensor, or None."""

    def __init__(self) -> None:
        super().__init__()
        # id(output) -> (output, what it was before: a tensor, or (parts, dim) of a concatenation).
        # The output is kept so that a reused id is never mistaken for it.
        self._seen: dict[int, tuple[Tensor, object]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in RELUS:
            x = args[0]
            in_place = func in _IN_PLACE or bool(kwargs.get("inplace", False))
            before = x.clone() if in_place else x
            output = func(*args, **kwargs)
            self._seen[id(output)] = (output, before)
            return output
        output = func(*args, **kwargs)
        if func in _CATS and isinstance(output, Tensor):
            tensors = args[0] if args else kwargs.get("tensors", ())
            parts = [self._entry(t) for t in tensors]
            if parts and all(part is not None for part in parts):
                dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
                self._seen[id(output)] = (output, (parts, dim))  # joined only if a hook asks for it
        return output

    def _entry(self, tensor: object) -> object | None:
        entry = self._seen.get(id(tensor))
        return entry[1] if entry is not None and entry[0] is tensor else None

    def has(self, output: object) -> bool:
        return self._entry(output) is not None

    def before(self, output: object) -> Tensor | None:
        """What `output` was before its ReLUs, or None when it is not a ReLU's output (nor a
        concatenation of them)."""
        entry = self._entry(output)
        return None if entry is None else _joined(entry)


def _joined(entry: object) -> Tensor:
    if isinstance(entry, Tensor):
        return entry
    parts, dim = entry
    return torch.cat([_joined(part) for part in parts], dim)
