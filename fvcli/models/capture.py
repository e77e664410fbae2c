"""Capturing layer outputs with forward hooks, stopping the forward pass once all are captured.

Stopping early means no computation past the deepest layer an objective reads, whatever the
model's structure: the hook that completes the set raises, and the caller catches it. Hooks are
always removed, even when the forward pass fails. A pre-ReLU twin (`LAYER_pre_relu`) is captured
by its layer's hook, from what the ReLU watch saw (fvcli.models.prerelu).

A captured output is the layer's own whatever runs after it: models.prepare turns off in-place
modules (ReLU(inplace=True)), but a forward's own functional in-place op (`F.relu_(x)`, `x += y`)
would overwrite an earlier captured layer while a later one is computed. Each captured tensor's
version counter tells: when one changed, that layer is captured as a copy from then on (for that
model) and the pass runs again.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Iterable

import torch
from torch import Tensor, nn

from fvcli.models.calls import module_call
from fvcli.models.layer_keys import LayerError, probe_images, select, split_key
from fvcli.models.prerelu import Watch, twin_base


class _AllCaptured(Exception):
    """Raised from a hook to end the forward pass; never escapes `forward_to`."""


# Per model, the layer keys whose output the forward changes in place after it: captured as copies.
_COPIED: weakref.WeakKeyDictionary[nn.Module, set[str]] = weakref.WeakKeyDictionary()


def _version(value) -> int | None:
    try:
        return value._version if isinstance(value, Tensor) else None
    except RuntimeError:  # an inference-mode tensor has no version counter
        return None


def forward_to(model: nn.Module, x: Tensor, layers: Iterable[str]) -> dict[str, Tensor]:
    """Run `model(x)` until every layer key in `layers` (a module path, maybe with `@ELEMENT`)
    has produced its output; return them by key. A key `PATH_pre_relu` that is no module of its own
    is the pre-ReLU twin of PATH; LayerError when PATH's output is not a ReLU's."""
    wanted = list(dict.fromkeys(layers))
    copied = _COPIED.get(model, set())
    captured, versions = _forward_to(model, x, wanted, copied)
    changed = {key for key, value in captured.items() if _version(value) != versions[key]}
    if not changed:
        return captured
    _COPIED[model] = copied | changed  # overwritten by an in-place op after it: copy, and run again
    captured, _ = _forward_to(model, x, wanted, _COPIED[model])
    return captured


def _forward_to(model: nn.Module, x: Tensor, wanted: list[str], copied: set[str]) -> tuple[dict[str, Tensor], dict[str, int | None]]:
    modules = dict(model.named_modules())
    captured: dict[str, Tensor] = {}
    versions: dict[str, int | None] = {}
    bases = {key: twin_base(modules, key) for key in wanted}
    watch = Watch() if any(bases.values()) else None

    calls = {key: module_call(modules, bases[key] or split_key(key)[0]) for key in wanted}

    def hook_for(key: str):
        base = bases[key]
        seen = [0]

        def hook(module: nn.Module, inputs, output) -> None:
            seen[0] += 1
            if key in captured or seen[0] != calls[key][1]:
                return  # a module called more than once: each call is its own layer (fvcli.models.calls)
            if base is None:
                captured[key] = select(output, key)
                if key in copied and isinstance(captured[key], Tensor):
                    captured[key] = captured[key].clone()
            else:
                before = watch.before(output)
                if before is None:
                    raise LayerError(
                        f"layer {base} has no pre-ReLU twin: its output is not a ReLU's output, nor a concatenation "
                        "of ReLU outputs (`fv layers` lists the twins there are)"
                    )
                captured[key] = before
            versions[key] = _version(captured[key])
            if len(captured) == len(wanted):
                raise _AllCaptured

        return hook

    handles = [modules[calls[key][0]].register_forward_hook(hook_for(key)) for key in wanted]
    try:
        with watch if watch is not None else contextlib.nullcontext():
            model(x)
    except _AllCaptured:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [path for path in wanted if path not in captured]
    if missing:
        raise RuntimeError(f"layers {', '.join(missing)} were not reached by the forward pass")
    return captured, versions


def layer_shapes(model: nn.Module, layers: Iterable[str], size: int, device: torch.device) -> dict[str, tuple[int, ...]]:
    """Each layer's output shape for one `size` x `size` image (a cheap probe, no gradients)."""
    with torch.no_grad():
        acts = forward_to(model, probe_images(model, 1, size, device), layers)
    return {path: tuple(a.shape) for path, a in acts.items()}


def not_differentiable(model: nn.Module, key: str, size: int, device: torch.device) -> str | None:
    """Why fv cannot render layer `key` by gradient ascent, or None: its output must be a real
    floating-point tensor that depends on the image through gradients. A `.detach()` or an integer,
    bool or complex output before it would otherwise fail at the first step (a RuntimeError), or
    leave every unit failed, or print torch's warning on discarding imaginary parts."""
    pixels = probe_images(model, 1, size, device, seed=0).requires_grad_()
    with torch.enable_grad():
        out = forward_to(model, pixels, [key])[key]
    if out.is_complex():
        return "a complex-valued tensor"
    if not out.is_floating_point():
        return f"a tensor of {str(out.dtype).removeprefix('torch.')}, not of a floating-point type"
    if not out.requires_grad:
        return "a tensor detached from the image (a .detach() or torch.no_grad() before it)"
    return None
