"""Where a layer's positions lie in the input image: its grid of positions, the square of input
pixels a position sees (measured from input gradients, not computed from the architecture), and
that square placed around a position. Dataset examples and activation atlases crop photos with it.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from fvcli.models.capture import forward_to
from fvcli.models.layer_keys import ResolvedLayer, channels_first, probe_images

FIELD_MASS = 0.9  # the share of a position's input gradient its crop holds (see field_sides)


def grid_of(info: ResolvedLayer) -> tuple[int, int] | None:
    """(rows, columns) of a layer's positions when they are places in the image, else None (flat
    outputs, and tokens that form no square grid)."""
    shape, layout = info.shape, info.layout
    if layout.kind == "nchw":
        return shape[2], shape[3]
    if layout.kind == "nhwc":
        return shape[1], shape[2]
    if layout.kind == "tokens":
        patches = shape[1] - layout.prefix_tokens
        side = math.isqrt(patches)
        return (side, side) if side * side == patches else None
    return None


def position_of(index: int, info: ResolvedLayer) -> tuple[int, int]:
    grid = grid_of(info)
    return divmod(index, grid[1]) if grid else (0, index)


def input_box(index: int, info: ResolvedLayer, size: int, side: int) -> tuple[float, float, float, float]:
    """The square of `side` input pixels centred on a position, moved inside the input where it would
    stick out; the whole input for layers without a grid."""
    grid = grid_of(info)
    if grid is None:
        return (0.0, 0.0, float(size), float(size))
    rows, columns = grid
    y, x = divmod(index, columns)
    cy, cx = (y + 0.5) * size / rows, (x + 0.5) * size / columns
    left = min(max(cx - side / 2, 0.0), size - side)
    top = min(max(cy - side / 2, 0.0), size - side)
    return (left, top, left + side, top + side)


def field_sides(module: torch.nn.Module, infos: list[ResolvedLayer], size: int, prepare: Callable[[Tensor], Tensor], device: torch.device) -> dict[str, int]:
    """Per layer key: the side, in input pixels, of the square a crop shows around a position.

    It is measured on the model itself: the gradient of the centre position (all channels summed) with
    respect to 2 random images, and the smallest square centred there that holds FIELD_MASS of the
    gradient's magnitude. That is the effective receptive field; the theoretical one of a deep layer
    covers most of the image, though its edges hardly matter. At least a grid cell, at most the input.
    """
    sides = {info.key: size for info in infos}
    gridded = [info for info in infos if grid_of(info)]
    if not gridded:
        return sides
    pixels = probe_images(module, 2, size, device, seed=0).requires_grad_()
    coords = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    with torch.enable_grad():
        acts = forward_to(module, prepare(pixels), [info.key for info in gridded])
        for info in gridded:
            rows, columns = grid_of(info)
            y, x = rows // 2, columns // 2
            out = channels_first(acts[info.key], info.layout)
            out = out.reshape(out.shape[0], out.shape[1], rows, columns)
            (grad,) = torch.autograd.grad(out[:, :, y, x].sum(), pixels, retain_graph=True)
            mass = grad.abs().sum(dim=(0, 1)).flatten()
            cy, cx = (y + 0.5) * size / rows, (x + 0.5) * size / columns
            distance = torch.maximum((coords - cy).abs().view(-1, 1), (coords - cx).abs().view(1, -1)).flatten()
            order = distance.argsort()
            cumulative = mass[order].cumsum(0)
            total = cumulative[-1].item()
            side = size
            if math.isfinite(total) and total > 0:
                at = min(int(torch.searchsorted(cumulative, FIELD_MASS * total)), len(order) - 1)
                side = math.ceil(2 * distance[order[at]].item())
            cell = math.ceil(size / min(rows, columns))
            sides[info.key] = int(min(size, max(side, cell)))
    return sides
