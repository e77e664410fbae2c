"""Capturing layer outputs with forward hooks, stopping the forward pass once all are captured.

Stopping early means no computation past the deepest layer an objective reads, whatever the
model's structure: the hook that completes the set raises, and the caller catches it. Hooks are
always removed, even when the forward pass fails.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

from fvcli.layer_keys import probe_images, select, split_key


class _AllCaptured(Exception):
    """Raised from a hook to end the forward pass; never escapes `forward_to`."""


def forward_to(model: nn.Module, x: Tensor, layers: Iterable[str]) -> dict[str, Tensor]:
    """Run `model(x)` until every layer key in `layers` (a module path, maybe with `@ELEMENT`)
    has produced its output; return them by key."""
    wanted = list(dict.fromkeys(layers))
    modules = dict(model.named_modules())
    captured: dict[str, Tensor] = {}

    def hook_for(key: str):
        def hook(module: nn.Module, inputs, output) -> None:
            if key in captured:
                return  # a module called twice: the first call is the layer's output
            captured[key] = select(output, key)
            if len(captured) == len(wanted):
                raise _AllCaptured

        return hook

    handles = [modules[split_key(key)[0]].register_forward_hook(hook_for(key)) for key in wanted]
    try:
        model(x)
    except _AllCaptured:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [path for path in wanted if path not in captured]
    if missing:
        raise RuntimeError(f"layers {', '.join(missing)} were not reached by the forward pass")
    return captured


def layer_shapes(model: nn.Module, layers: Iterable[str], size: int, device: torch.device) -> dict[str, tuple[int, ...]]:
    """Each layer's output shape for one `size` x `size` image (a cheap probe, no gradients)."""
    with torch.no_grad():
        acts = forward_to(model, probe_images(model, 1, size, device), layers)
    return {path: tuple(a.shape) for path, a in acts.items()}
