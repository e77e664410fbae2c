"""A tiny convolutional network for fast tests, loaded as `--model tests/tiny_model.py:make`."""

from collections import OrderedDict

import torch
from torch import nn


def make() -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 8, 3, padding=1),
            relu1=nn.ReLU(inplace=True),
            conv2=nn.Conv2d(8, 16, 3, stride=2, padding=1),
            bn2=nn.BatchNorm2d(16),
            relu2=nn.ReLU(),
            conv3=nn.Conv2d(16, 12, 3, stride=2, padding=1),
            relu3=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(12, 5),
        )
    )


def not_a_module():
    return 42


class _Broken(nn.Module):
    """On an RGB image: channel 0 is zero for every input (dead), channel 1 NaN, channel 2 blue."""

    def forward(self, x):
        dead = torch.zeros_like(x[:, :1])
        nan = (-1.0 - x[:, 1:2] ** 2).sqrt()
        return torch.cat([dead, nan, x[:, 2:]], dim=1)


def make_broken() -> nn.Module:
    return nn.Sequential(OrderedDict(broken=_Broken()))


def make_with_preprocessing():
    """The tiny model and the preprocessing it expects, as a factory may return them."""
    return make(), {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "size": 40}


class _SmallMemory(nn.Module):
    """Runs out of memory on batches of more than two images, as a small GPU would."""

    def __init__(self):
        super().__init__()
        self.inner = make()

    def forward(self, x):
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError(f"out of memory: a batch of {x.shape[0]} images")
        return self.inner(x)


def make_small_memory() -> nn.Module:
    return _SmallMemory()


class _Heads(nn.Module):
    """The tiny model's features and logits, returned together as a dict or a tuple, as detection
    and multi-head models return theirs: its own output has elements, and no module returns them."""

    def __init__(self, as_dict: bool):
        super().__init__()
        self.body, self.as_dict = make(), as_dict

    def forward(self, x):
        feat = self.body[:7](x)  # conv1 .. relu3
        logits = self.body[7:](feat)
        return {"logits": logits, "feat": feat} if self.as_dict else (feat, logits)


def make_dict_output() -> nn.Module:
    return _Heads(as_dict=True)


def make_tuple_output() -> nn.Module:
    return _Heads(as_dict=False)
