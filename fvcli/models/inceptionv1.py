"""InceptionV1 ("inception5h"): the network of the Distill "Feature Visualization" article.

This is GoogLeNet as Google trained it in TensorFlow, the model Lucid calls InceptionV1: local
response normalization instead of batch norm, 1008 classes, and mixed4a with 508 channels (not the
paper's 512). Its parameters are named exactly as in the PyTorch conversion published in
ProGamerGov/pytorch-old-tensorflow-models (`inception5h.pth`), which therefore loads with
`load_state_dict(strict=True)`: flat attributes such as `conv2d0_pre_relu_conv` and
`mixed4a_3x3_bottleneck_pre_relu_conv`, and the classifier `softmax2_pre_activation_matmul`.

Input: RGB (no channel flip), scaled as x * 255 - 117 for x in [0, 1]. fv applies (x - mean) / std
before the model, so this model's normalization is mean = 117/255 and std = 1/255 for every channel
(`NORMALIZATION`); `forward` takes the already normalized tensor.

Layers a forward hook can observe, named as in Lucid (all parameter-free modules, so they add no
state-dict keys):
- `conv2d0`, `conv2d1`, `conv2d2`: the stem convolutions after their ReLU;
- `mixed3a` ... `mixed5b`: each block's output, the concatenation of its post-ReLU branches in the
  order 1x1, 3x3, 5x5, pool_reduce;
- `<block>_1x1`, `<block>_3x3_bottleneck`, `<block>_3x3`, `<block>_5x5_bottleneck`, `<block>_5x5`,
  `<block>_pool_reduce`: each branch after its ReLU.
Every convolution module (`..._pre_relu_conv`) is observable too, before its ReLU. Lucid's own
pre-ReLU names (`conv2d0_pre_relu`, `mixed4a_pre_relu`: the four branch convolutions concatenated,
`mixed4a_3x3_pre_relu`) are fv's pre-ReLU twins of these layers (fvcli.models.prerelu), which need no
module here.

TensorFlow's 'SAME' padding is emulated with an explicit pad before each convolution and max pool
(asymmetric for stride 2: the extra row and column go at the bottom and right, as TF does), so
activations match TF at any input size. The final 7x7 average pool is adaptive here, which is the
same at 224 px and lets smaller inputs reach the classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WEIGHTS_URL = "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth"
WEIGHTS_FILE = "inception5h.pth"
NORMALIZATION = ((117 / 255,) * 3, (1 / 255,) * 3)  # (mean, std): the model sees x * 255 - 117
NUM_CLASSES = 1008

# The article's layers in forward order, with their channel counts.
ARTICLE_LAYERS = (
    ("conv2d0", 64),
    ("conv2d1", 64),
    ("conv2d2", 192),
    ("mixed3a", 256),
    ("mixed3b", 480),
    ("mixed4a", 508),
    ("mixed4b", 512),
    ("mixed4c", 512),
    ("mixed4d", 528),
    ("mixed4e", 832),
    ("mixed5a", 832),
    ("mixed5b", 1024),
)

# Inception blocks: name, input channels, then the output channels of the 1x1 branch, the 3x3
# bottleneck and 3x3, the 5x5 bottleneck and 5x5, and the pool_reduce (1x1 after the max pool).
BLOCKS = (
    ("mixed3a", 192, 64, 96, 128, 16, 32, 32),
    ("mixed3b", 256, 128, 128, 192, 32, 96, 64),
    ("mixed4a", 480, 192, 96, 204, 16, 48, 64),
    ("mixed4b", 508, 160, 112, 224, 24, 64, 64),
    ("mixed4c", 512, 128, 128, 256, 24, 64, 64),
    ("mixed4d", 512, 112, 144, 288, 32, 64, 64),
    ("mixed4e", 528, 256, 160, 320, 32, 128, 128),
    ("mixed5a", 832, 256, 160, 320, 48, 128, 128),
    ("mixed5b", 832, 384, 192, 384, 48, 128, 128),
)
BRANCHES = ("1x1", "3x3_bottleneck", "3x3", "5x5_bottleneck", "5x5", "pool_reduce")

# TF's LRN op in the original graph: depth_radius=5, bias=2, alpha=1e-4, beta=0.5. PyTorch divides
# alpha by the window size (2 * 5 + 1), so alpha is scaled up by that size here. (The reference
# conversion's size=9, alpha=1e-4, k=1 came from its converter and is off; Captum's later InceptionV1
# uses these values. LRN has no parameters, so either way the weights load the same.)
LRN = dict(size=11, alpha=11 * 1e-4, beta=0.5, k=2.0)


def same_pad(x: Tensor, kernel: int, stride: int, value: float = 0.0) -> Tensor:
    """Pad H and W as TensorFlow's 'SAME' does: output size ceil(n / stride), any odd extra at the end."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad wants the last dimension (W) first
        total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


def max_pool_same(x: Tensor, stride: int) -> Tensor:
    # -inf padding: TF's max pool ignores padded positions rather than treating them as zeros.
    return F.max_pool2d(same_pad(x, 3, stride, value=float("-inf")), 3, stride)


class Concat(nn.Module):
    """Concatenate along channels; exists so a forward hook can observe a block's output."""

    def forward(self, *branches: Tensor) -> Tensor:
        return torch.cat(branches, dim=1)


class SameConv(nn.Conv2d):
    """A convolution with TF 'SAME' padding; its parameters are those of a plain nn.Conv2d."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(same_pad(x, self.kernel_size[0], self.stride[0]))


class InceptionV1(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv2d0_pre_relu_conv = SameConv(3, 64, 7, stride=2)
        self.conv2d0 = nn.ReLU()
        self.conv2d1_pre_relu_conv = SameConv(64, 64, 1)
        self.conv2d1 = nn.ReLU()
        self.conv2d2_pre_relu_conv = SameConv(64, 192, 3)
        self.conv2d2 = nn.ReLU()
        for name, c_in, c1, c3r, c3, c5r, c5, cp in BLOCKS:
            # (in, out, kernel) of each branch's convolution, in the order of BRANCHES
            convs = ((c_in, c1, 1), (c_in, c3r, 1), (c3r, c3, 3), (c_in, c5r, 1), (c5r, c5, 5), (c_in, cp, 1))
            for branch, (i, o, k) in zip(BRANCHES, convs):
                self.add_module(f"{name}_{branch}_pre_relu_conv", SameConv(i, o, k))
                self.add_module(f"{name}_{branch}", nn.ReLU())
            self.add_module(name, Concat())
        self.softmax2_pre_activation_matmul = nn.Linear(1024, num_classes)

    def _branch(self, block: str, branch: str, x: Tensor) -> Tensor:
        conv = getattr(self, f"{block}_{branch}_pre_relu_conv")
        return getattr(self, f"{block}_{branch}")(conv(x))

    def _inception(self, block: str, x: Tensor) -> Tensor:
        b1 = self._branch(block, "1x1", x)
        b3 = self._branch(block, "3x3", self._branch(block, "3x3_bottleneck", x))
        b5 = self._branch(block, "5x5", self._branch(block, "5x5_bottleneck", x))
        bp = self._branch(block, "pool_reduce", max_pool_same(x, 1))
        return getattr(self, block)(b1, b3, b5, bp)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (Lucid's softmax2_pre_activation), shape (N, 1008), from normalized RGB input."""
        x = self.conv2d0(self.conv2d0_pre_relu_conv(x))
        x = F.local_response_norm(max_pool_same(x, 2), **LRN)
        x = self.conv2d1(self.conv2d1_pre_relu_conv(x))
        x = self.conv2d2(self.conv2d2_pre_relu_conv(x))
        x = max_pool_same(F.local_response_norm(x, **LRN), 2)
        for block, *_ in BLOCKS:
            if block in ("mixed4a", "mixed5a"):
                x = max_pool_same(x, 2)  # TF's maxpool4 and maxpool10
            x = self._inception(block, x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # TF: a 7x7 VALID average pool at 224 px
        return self.softmax2_pre_activation_matmul(x)


def build_inceptionv1() -> InceptionV1:
    """The architecture with PyTorch's default initialization; load `WEIGHTS_URL` for the trained one."""
    return InceptionV1()
