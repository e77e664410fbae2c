"""Probing a layer's shape, and the size a model must see: the first forward passes of a run.

A layer's shape comes from one forward pass of a probe image at the render size. Models that run
at one size only (a ViT at its native size; a small classifier whose Linear layer fixes the
input, fvcli.models.fixed_size) are found here and fed their size; a model that fails on a large
image too is broken (its forward raises), not given too small an image.
"""

from __future__ import annotations

from typing import Callable

import torch

from fvcli.errors import FvError, raised
from fvcli.models.capture import layer_shapes, not_differentiable
from fvcli.models.fixed_size import fixed_size
from fvcli.models.layer_keys import LayerError
from fvcli.models.registry import LoadedModel

ANY_MODEL_RUNS_AT = 224  # px: a model that fails on this size too is broken, not given too small an image


def cannot_compute(name: str, key: str, size: int, error: BaseException, hint: str = "") -> FvError:
    """A model that cannot compute a layer (`key`; '' is its output) on a `size` px image, in one line."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    what = f"layer {key}" if key else "its output"
    return FvError(f"{name} cannot compute {what} on a {size} px image ({first}){hint}")


def forward_failed(model: LoadedModel, error: BaseException) -> FvError:
    return FvError(f"model {model.name}: forward {raised(error)}")


class _TooSmall(Exception):
    """The model cannot run on an image of the requested size."""

    def __init__(self, error: Exception):
        self.error = error


class ShapeProbe:
    """Layer shapes of the run's models on `device`; `say` tells of a model found to take one size."""

    def __init__(self, device: torch.device, say: Callable[[str], None]):
        self.device, self.say = device, say

    def layer(self, model: LoadedModel, key: str, size: int, canvas: int) -> tuple[tuple[int, ...], int | None]:
        """The shape of layer `key` (the output for '') and the size images are resized to (None:
        as rendered) for images of `size` px that the transforms pad to `canvas` px. FvError when
        the model cannot compute it; LayerError (worded by the resolver) for a tuple or dict output
        or a missing element."""
        try:
            shape, fixed = self._shape(model, key, size, canvas)
        except _TooSmall as small:
            raise cannot_compute(model.name, key, size, small.error, "; try a larger --size") from None
        try:
            why = not_differentiable(model.module, key, fixed or size, self.device)
        except (Exception, SystemExit):
            why = None  # it ran without gradients; what fails with them fails as a batch, said there
        if why is not None:
            what = f"layer {key}" if key else "its output"
            raise LayerError(f"{model.name}: {what} is {why}; fv renders by following gradients to the image: choose a layer before it")
        return shape, fixed

    def _probe(self, model: LoadedModel, key: str, size: int) -> tuple[int, ...]:
        return layer_shapes(model.module, [key], size, self.device)[key]

    def _shape(self, model: LoadedModel, key: str, size: int, canvas: int) -> tuple[tuple[int, ...], int | None]:
        """Models that take one input size only (ViTs) run at the size they were trained at. A model
        that runs at the image's size but not at the transforms' larger canvas, such as a 28 px
        digit classifier whose Linear layer fixes the size, is fed the transformed image resized
        back to `size`. For other models a failure means this image is too small (_TooSmall),
        unless the model fails on a large image too: then its forward is broken (FvError)."""
        try:
            shape = self._probe(model, key, size)
        except LayerError:
            raise
        except (Exception, SystemExit) as error:
            return self._shape_elsewhere(model, key, size, error)
        if canvas != size:
            try:
                self._probe(model, key, canvas)
            except LayerError:
                raise
            except (Exception, SystemExit):
                return shape, size
        return shape, None

    def whole_size(self, model: LoadedModel, size: int) -> int | None:
        """The side at which a model that fails whole at `size` runs: the one it declares (a ViT's,
        a factory's), else the one its Linear layer fits (found once, then kept as its native size);
        None when there is none."""
        if model.native_size is None:
            fixed = fixed_size(model.module, size, self.device)
            if fixed is not None and fixed.size is None:
                raise FvError(f"model {fixed.describe(model.name)}") from None
            if fixed is not None:
                model.native_size = fixed.size
                self.say(f"fv: {fixed.describe(model.name)}: images are rendered at --size and resized to {fixed.size} px for it")
        return model.native_size if model.native_size not in (None, size) else None

    def _shape_elsewhere(self, model: LoadedModel, key: str, size: int, error: BaseException) -> tuple[tuple[int, ...], int | None]:
        """The layer's shape for a model that failed (`error`) to compute it on a `size` px image.
        A model whose Linear layer fixes its input size (fvcli.models.fixed_size) takes the side that fits
        it from then on, as a ViT takes its native size."""
        other = self.whole_size(model, size)
        if other is not None:
            try:
                return self._probe(model, key, other), other
            except LayerError:
                raise
            except (Exception, SystemExit):
                raise _TooSmall(error) from None
        try:
            self._probe(model, key, max(size, ANY_MODEL_RUNS_AT))
        except LayerError:
            raise
        except (Exception, SystemExit):
            raise forward_failed(model, error) from None
        raise _TooSmall(error) from None
