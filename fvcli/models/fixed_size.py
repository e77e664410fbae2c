"""Models whose Linear layer fixes the input size: which layer, and which image side fits it.

A LeNet flattens its last feature map into `nn.Linear(256, 120)`, so it runs on 28 px images
only; at 64 px it fails deep inside with `mat1 and mat2 shapes cannot be multiplied (1x2704 and
256x120)`. What reaches such a layer grows with the image's side, so a search over sides finds
the smallest one that gives it exactly its `in_features`. Each probe runs the model on one image,
without gradients, and stops at that layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fvcli.models.layer_keys import probe_images
from fvcli.specs.limits import MAX_SIZE


@dataclass(frozen=True)
class FixedSize:
    """A Linear layer that an image of the requested side does not fit."""

    layer: str  # the Linear layer's module path
    features: int  # its in_features
    requested: int  # the image side asked for
    got: int  # the features an image of that side gives it
    size: int | None  # the smallest image side that gives exactly `features`; None: no side does

    def describe(self, model: str) -> str:
        """What is fixed, in words, for a message."""
        takes = f"takes {self.size}x{self.size} images only" if self.size else "takes images of one size only"
        why = f"its Linear layer {self.layer} expects {self.features} features, and a {self.requested} px image gives it {self.got}"
        return f"{model} {takes} ({why})" + ("" if self.size else f"; no side up to {MAX_SIZE} px gives it {self.features}")


class _Reached(Exception):
    """Raised from a pre-hook to end a probe at the Linear layer it watches."""

    def __init__(self, layer: str, features: int):
        self.layer, self.features = layer, features


def _misfit(module: nn.Module, side: int, device: torch.device, watched: str | None = None) -> tuple[str, int] | None:
    """(layer, features its input has) for the first Linear layer whose input does not fit its
    in_features on one `side` px image, or for the `watched` one; None when the forward pass never
    gets there (it fails before, or every Linear layer fits)."""

    def hook_for(name: str):
        def hook(layer: nn.Linear, inputs) -> None:
            x = inputs[0] if inputs else None
            if isinstance(x, torch.Tensor) and x.dim() and (watched is not None or x.shape[-1] != layer.in_features):
                raise _Reached(name, int(x.shape[-1]))

        return hook

    handles = [
        layer.register_forward_pre_hook(hook_for(name))
        for name, layer in module.named_modules()
        if isinstance(layer, nn.Linear) and layer.in_features and name == (watched or name)
    ]
    try:
        with torch.no_grad():
            module(probe_images(module, 1, side, device))
    except _Reached as reached:
        return reached.layer, reached.features
    except (Exception, SystemExit):  # the model's own code: too small for its convolutions, say
        return None
    finally:
        for handle in handles:
            handle.remove()
    return None


def fixed_size(module: nn.Module, side: int, device: torch.device) -> FixedSize | None:
    """The Linear layer that a `side` px image does not fit, and the side that fits it; None when
    the model does not fail for that reason."""
    found = _misfit(module, side, device)
    if found is None:
        return None
    layer, got = found
    wanted = module.get_submodule(layer).in_features
    seen: dict[int, int] = {side: got}

    def features(s: int) -> int:  # 0: the forward pass fails before the layer (too small)
        if s not in seen:
            reached = _misfit(module, s, device, watched=layer)
            seen[s] = reached[1] if reached else 0
        return seen[s]

    # Bracket the side, then bisect: features(low) < wanted <= features(high).
    low, high = (0, side) if got > wanted else (side, side)
    while features(high) < wanted:
        if high >= MAX_SIZE:
            return FixedSize(layer, wanted, side, got, None)
        low, high = high, min(2 * high, MAX_SIZE)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if features(middle) >= wanted else (middle, high)
    return FixedSize(layer, wanted, side, got, high if features(high) == wanted else None)
