"""Folding BatchNorm into the convolution before it, for speed.

In eval mode a BatchNorm is a fixed affine map per channel, so convolution followed by BatchNorm is
one convolution with scaled weights and a bias. Folding removes BatchNorm's forward and backward
pass from every optimization step (about a tenth of GoogLeNet's step on a CPU).

Pairs are found by watching a probe forward pass: a BatchNorm whose input is exactly a
convolution's output. A convolution whose own output is a requested layer is left alone, and the
requested layers are compared before and after on the probe: if any differs beyond float rounding
(a convolution's output used elsewhere too, say), the model is restored unfolded. The comparison
runs in full float32 (no autocast, no TF32): on CUDA, TF32 convolutions round by more than the
tolerance, and a check run in them refuses every fold.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterable, Iterator

import torch
from torch import Tensor, nn

from fvcli.models.capture import forward_to
from fvcli.models.layer_keys import split_key

TOLERANCE = 1e-3  # relative to the layer's largest magnitude


def _pairs(model: nn.Module, probe: Tensor) -> list[tuple[str, str]]:
    producers: dict[int, tuple[str, Tensor]] = {}
    pairs: list[tuple[str, str]] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(lambda m, i, o, name=name: producers.__setitem__(id(o), (name, o))))
        elif isinstance(module, nn.BatchNorm2d):

            def before(m, inputs, name=name):
                producer = producers.get(id(inputs[0]))
                if producer is not None and producer[1] is inputs[0]:
                    pairs.append((producer[0], name))

            handles.append(module.register_forward_pre_hook(before))
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(pairs))


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        folded = (bias - bn.running_mean) * scale + bn.bias
        conv.bias = nn.Parameter(folded, requires_grad=False)


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Float32 arithmetic as IEEE float32 within: autocast off, and TF32 off for CUDA's
    convolutions and matrix products (on by default for convolutions), restored after."""
    settings = []
    for backend in (torch.backends.cudnn.conv, torch.backends.cuda.matmul):
        if hasattr(backend, "fp32_precision"):  # torch >= 2.9
            settings.append((backend, "fp32_precision", "ieee"))
    if not settings:  # older torch: the flags that came before fp32_precision
        settings = [(torch.backends.cudnn, "allow_tf32", False), (torch.backends.cuda.matmul, "allow_tf32", False)]
    saved = [(backend, name, getattr(backend, name)) for backend, name, _ in settings]
    try:
        for backend, name, value in settings:
            setattr(backend, name, value)
        with torch.autocast(device.type, enabled=False):
            yield
    finally:
        for backend, name, value in saved:
            setattr(backend, name, value)


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, name, module)


def fold_batchnorms(model: nn.Module, layers: Iterable[str], probe: Tensor) -> int:
    """Fold eligible conv -> BatchNorm pairs of an eval-mode model in place; return how many.

    `layers`: the layer keys that will be read (their values must not change); `probe`: an input.
    """
    if model.training:
        return 0
    keys = list(dict.fromkeys(layers))
    kept = {split_key(key)[0] for key in keys}
    pairs = [(conv, bn) for conv, bn in _pairs(model, probe) if conv not in kept]
    if not pairs:
        return 0
    modules = dict(model.named_modules())
    originals = {name: copy.deepcopy(modules[name]) for pair in pairs for name in pair}
    with torch.no_grad(), full_precision(probe.device):
        before = forward_to(model, probe, keys)
    for conv, bn in pairs:
        _fold(modules[conv], modules[bn])
        _replace(model, bn, nn.Identity())
    with torch.no_grad(), full_precision(probe.device):
        after = forward_to(model, probe, keys)
    if all(_close(before[k], after[k]) for k in keys):
        return len(pairs)
    for name, module in originals.items():  # not a plain conv -> BatchNorm chain: undo
        _replace(model, name, module)
    return 0


def _close(a: Tensor, b: Tensor) -> bool:
    scale = a.abs().max().clamp_min(1e-6)
    return bool(((a - b).abs().max() / scale) <= TOLERANCE)
