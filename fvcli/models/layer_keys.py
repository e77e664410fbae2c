"""Layers: naming a layer's output, knowing where its channels are, and listing a model's layers.

A layer key is a module path from `named_modules()`, with `@ELEMENT` when the module returns a tuple,
list or dict (`blocks.3@0`, `heads@logits`). The model's own output is the root module, whose path is
"" (key `@logits` for an element of it); targets call it `output` (`output@logits`). The layout of an output says where its channels are; it
is read off the shape the layer gives for a square probe image:

  nchw    (N, C, H, W)  convolution outputs: a channel is the mean over H and W
  nhwc    (N, H, W, C)  channel-last outputs (inside ConvNeXt blocks): the same, channels last
  tokens  (N, T, C)     transformer tokens: a channel is the mean over the patch tokens
  flat    (N, C)        logits, pooled features: a channel is one entry
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fvcli.models.calls import call_name
from fvcli.models.prerelu import SUFFIX, Watch

MAX_PREFIX_TOKENS = 8  # class, distillation and register tokens ahead of the patch grid
OUTPUT_NAME = "output"  # what targets call the model's own output (the root module, path "")


@dataclass(frozen=True)
class Layout:
    kind: str  # nchw, nhwc, tokens or flat
    channels: int
    prefix_tokens: int = 0  # tokens only: leading non-patch tokens (a ViT's class token)

    @property
    def channel_axis(self) -> int:
        return 1 if self.kind in ("nchw", "flat") else -1


def input_channels(model: nn.Module) -> int:
    """How many channels the model's images have: the input channels of its first convolution
    (1 for grayscale models, 4 for RGB + infrared ...), or 3 where there is none to read."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        kind = type(module).__name__ if not hasattr(module, "original_name") else module.original_name
        if kind in ("Conv2d", "LazyConv2d") and isinstance(weight, Tensor) and weight.dim() == 4:
            return weight.shape[1] * getattr(module, "groups", 1)
    return 3


def probe_images(model: nn.Module, count: int, size: int, device: torch.device | str = "cpu", seed: int | None = None) -> Tensor:
    """`count` images of the model's channel count: zeros, or uniform noise from `seed`."""
    shape = (count, input_channels(model), size, size)
    if seed is None:
        return torch.zeros(shape, device=device)
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)).to(device)


def split_key(key: str) -> tuple[str, str | None]:
    """`blocks.3@0` -> ("blocks.3", "0"); `mixed4a` -> ("mixed4a", None)."""
    path, sep, element = key.partition("@")
    return path, (element if sep else None)


def describe_output(output: Any) -> str:
    if isinstance(output, Tensor):
        return str(tuple(output.shape))
    if isinstance(output, dict):
        return "dict with keys " + ", ".join(f"{k} {describe_output(v)}" for k, v in output.items())
    if isinstance(output, (tuple, list)):
        return f"{type(output).__name__} of " + ", ".join(f"@{i} {describe_output(v)}" for i, v in enumerate(output))
    return type(output).__name__


class LayerError(ValueError):
    """A layer key that does not name a tensor of the layer's output (told apart from the model's own errors).

    `elements`: for a tuple or dict output named without `@ELEMENT`, its elements' names and shapes
    (None: not a tensor), so that a message can suggest one; `returns`: that output, described."""

    def __init__(self, message: str, elements: tuple[tuple[str, tuple[int, ...] | None], ...] = (), returns: str = ""):
        super().__init__(message)
        self.elements, self.returns = elements, returns


def _elements(output: Any) -> tuple[tuple[str, tuple[int, ...] | None], ...]:
    items = output.items() if isinstance(output, dict) else enumerate(output)
    return tuple((str(k), tuple(v.shape) if isinstance(v, Tensor) else None) for k, v in items)


def select(output: Any, key: str) -> Tensor:
    """The tensor a layer key names within a module's output; LayerError says what there is."""
    path, element = split_key(key)
    # The root module has no path: messages call it what targets do.
    layer = f"layer {path}" if path else f"the model's {OUTPUT_NAME}"
    if element is None:
        if isinstance(output, Tensor):
            return output
        returns = describe_output(output)
        elements = _elements(output) if isinstance(output, (tuple, list, dict)) else ()
        if not any(shape is not None for _, shape in elements):  # None, a number, a tuple of no tensor
            raise LayerError(f"{layer} gives {'None' if output is None else returns}, no tensor; fv reads a layer that returns a tensor", elements, returns)
        if path:
            raise LayerError(f"layer {path} returns a {returns}; name one element as {path}@ELEMENT", elements, returns)
        # The model's own output: its name is not one the user wrote, so show it with an element.
        tensors = [k for k, shape in elements if shape is not None]
        example = f"{OUTPUT_NAME}@{tensors[0]}" if tensors else f"{OUTPUT_NAME}@ELEMENT"
        raise LayerError(f"the model returns a {returns}; name one element as {example}", elements, returns)
    try:
        if isinstance(output, dict):
            chosen = output[element]
        elif isinstance(output, (tuple, list)):
            chosen = output[int(element)]
        else:
            raise KeyError(element)
    except (KeyError, IndexError, ValueError):
        raise LayerError(f"{layer} has no element @{element}: it returns a {describe_output(output)}") from None
    if not isinstance(chosen, Tensor):
        raise LayerError(f"{layer}@{element} is a {describe_output(chosen)}, not a tensor")
    return chosen


def infer_layout(shape: tuple[int, ...]) -> Layout:
    """Where the channels are, from a layer's output shape for one square probe image."""
    if len(shape) == 2:
        return Layout("flat", shape[1])
    if len(shape) == 3:
        tokens, channels = shape[1], shape[2]
        grid = math.isqrt(tokens)
        prefix = tokens - grid * grid
        if grid == 0 or prefix > MAX_PREFIX_TOKENS:
            prefix = 0  # not a square patch grid with a few leading tokens: average them all
        return Layout("tokens", channels, prefix)
    if len(shape) == 4:
        if shape[2] != shape[3] and shape[1] == shape[2]:  # a square image's (N, H, W, C): H == W first
            return Layout("nhwc", shape[3])
        return Layout("nchw", shape[1])
    raise ValueError(f"an output of shape {tuple(shape)} has no channel axis fv knows (expected 2, 3 or 4 dimensions)")


def at_position(output: Tensor, position: tuple[int, int] | None) -> Tensor:
    """From a channels-first output (see channels_first), one position: shape (N, C).

    `position` is (y, x) on the spatial grid or on a square patch-token grid; None is the centre
    (on tokens that form no square grid, the middle token). Flat outputs have no positions.
    """
    if output.dim() == 2:
        return output
    if output.dim() == 4:
        h, w = output.shape[2], output.shape[3]
        y, x = position if position is not None else (h // 2, w // 2)
        if not (0 <= y < h and 0 <= x < w):
            raise IndexError(f"position y={y}, x={x} is outside the {h} x {w} grid")
        return output[:, :, y, x]
    count = output.shape[2]
    grid = math.isqrt(count)
    if position is None:
        index = (grid // 2) * grid + grid // 2 if grid * grid == count else count // 2
    else:
        y, x = position
        if grid * grid != count or not (0 <= y < grid and 0 <= x < grid):
            raise IndexError(f"position y={y}, x={x} is outside the {grid} x {grid} patch grid")
        index = y * grid + x
    return output[:, :, index]


def channels_first(output: Tensor, layout: Layout | None, patch_tokens_only: bool = True) -> Tensor:
    """The output as (N, C, ...) with only the positions a channel averages over (patch tokens)."""
    if layout is None or layout.kind in ("nchw", "flat"):
        return output
    if layout.kind == "tokens" and patch_tokens_only:
        output = output[:, layout.prefix_tokens :]
    return output.movedim(-1, 1)


@dataclass(frozen=True)
class ResolvedLayer:
    """A layer a target names, resolved on a model: what a job's objectives and sidecar read."""

    name: str  # as written
    key: str  # module path, with @ELEMENT
    shape: tuple[int, ...]
    layout: Layout


def hookable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The named modules whose outputs forward hooks can see: not the inside of TorchScript code."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if name and not isinstance(module, torch.jit.ScriptModule)
    ]


@dataclass(frozen=True)
class LayerInfo:
    key: str
    output: str  # shape, or what the module returned
    layout: Layout | None
    pre_relu_of: str | None = None  # a pre-ReLU twin: the module path whose ReLUs it feeds


def list_layers(model: nn.Module, size: int, device: torch.device | str = "cpu") -> list[LayerInfo]:
    """Every module a target can name, in the order the forward pass enters them, with its output;
    a module called more than once is a layer per call (`relu`, `relu_call2`, fvcli.models.calls).

    One forward pass on a `size` x `size` image. Tuple and dict outputs are listed element by element
    (`path@0`); modules the forward pass never runs are left out. A module whose output a ReLU made
    is followed by its pre-ReLU twin, `path_pre_relu` (see fvcli.models.prerelu). A model that returns a
    tuple or dict ends the list with its elements, `output@ELEMENT` (no module may hold them).
    """
    entered: list[str] = []  # layer names (a call's, fvcli.models.calls), in the order the forward enters them
    outputs: dict[str, Any] = {}
    twins: set[str] = set()
    watch = Watch()
    started: dict[str, int] = {}
    finished: dict[str, int] = {}

    def enter(name: str) -> None:
        started[name] = started.get(name, 0) + 1
        entered.append(call_name(name, started[name]))

    def seen(name: str, output: Any) -> None:
        finished[name] = finished.get(name, 0) + 1
        layer = call_name(name, finished[name])
        if layer not in outputs and watch.has(output):
            twins.add(layer)
        outputs.setdefault(layer, output)

    modules = hookable_modules(model)
    handles = []
    for name, module in modules:
        handles.append(module.register_forward_pre_hook(lambda m, i, name=name: enter(name)))
        handles.append(module.register_forward_hook(lambda m, i, o, name=name: seen(name, o)))
    try:
        with torch.no_grad(), watch:
            result = model(probe_images(model, 1, size, device))
    finally:
        for handle in handles:
            handle.remove()
    names = {name for name, _ in modules}
    infos: list[LayerInfo] = []
    for name in dict.fromkeys(entered):
        output = outputs.get(name)
        if isinstance(output, Tensor):
            shape = tuple(output.shape)
            infos.append(LayerInfo(name, str(shape), _layout_or_none(shape)))
            if name in twins and name + SUFFIX not in names:  # a module of that name would win
                infos.append(LayerInfo(name + SUFFIX, str(shape), _layout_or_none(shape), pre_relu_of=name))
        elif isinstance(output, (tuple, list, dict)):
            infos += _element_infos(name, output)
    if isinstance(result, (tuple, list, dict)) and OUTPUT_NAME not in names:  # a module named output is listed as one
        infos += _element_infos(OUTPUT_NAME, result)
    return infos


def _element_infos(name: str, output: Any) -> list[LayerInfo]:
    return [
        LayerInfo(f"{name}@{element}", str(shape), _layout_or_none(shape))
        for element, shape in _elements(output)
        if shape is not None
    ]


def _layout_or_none(shape: tuple[int, ...]) -> Layout | None:
    try:
        return infer_layout(shape)
    except ValueError:
        return None
