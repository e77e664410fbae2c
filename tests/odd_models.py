"""Models an adversary writes (loaded as `--model tests/odd_models.py:make_X`): each is small, and
odd in one way fv must answer in one line."""

from collections import OrderedDict

import torch
from torch import nn


class _Lambda(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


def _tiny(after: nn.Module) -> nn.Module:
    """conv (3 -> 4 channels), then `after` as layer `odd`, then a 4 -> 5 head."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(3, 4, 3, padding=1), odd=after, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(4, 5),
    ))


def make_detached() -> nn.Module:
    """`.detach()` before layer odd: nothing there depends on the image through gradients."""
    return _tiny(_Lambda(lambda x: x.detach() * 2))


def make_bool() -> nn.Module:
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), odd=_Lambda(lambda x: x > 0)))


def make_int64() -> nn.Module:
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), odd=_Lambda(lambda x: (x * 100).long())))


def make_complex() -> nn.Module:
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), odd=_Lambda(lambda x: x.to(torch.complex64))))


def make_none() -> nn.Module:
    return _Lambda(lambda x: None)


def make_overflow() -> nn.Module:
    """Layer odd's float32 activations overflow to infinity at every other position (of 8x8)."""
    def scale(x):
        factor = torch.ones_like(x)
        factor[..., ::2, :] = 1e30
        return x * factor * factor  # 1e60 overflows float32: +-inf wherever x is not 0

    return nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(8), conv=nn.Conv2d(3, 4, 1), odd=_Lambda(scale)))


def make_wide() -> nn.Module:
    """Layer wide has 22,000 channels (an ImageNet-21k head is 21,843 wide) on a few positions."""
    return nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(4), wide=nn.Conv2d(3, 22_000, 1)))


def make_fixed_32() -> nn.Module:
    """Runs at 32 px only: its head is a Linear layer over the flattened 32 x 32 image."""
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3, padding=1), flatten=nn.Flatten(), fc=nn.Linear(4 * 32 * 32, 5)))


def make_meta() -> nn.Module:
    """A model whose parameters are on the meta device: they have shapes and no values."""
    with torch.device("meta"):
        return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3)))
