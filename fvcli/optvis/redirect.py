"""ReLU gradient redirect: a signal for units that start dead.

A ReLU passes no gradient where its input is negative, so a unit whose every upstream ReLU is
closed on the initial image never moves. For the first steps (Lucid uses 16), wherever a ReLU
blocks all of one image's gradient, the gradient is let through anyway, except where it would push
an already negative input further down. The mode intercepts every `relu` call, functional or
module, so it works on any model without editing it.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from fvcli.models.prerelu import RELUS

REDIRECT_STEPS = 16


class _RedirectedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        closed = x <= 0
        if x.dim() == 0:
            return grad.masked_fill(closed, 0)
        # Per image: does any gradient reach an open unit? Then this is a plain ReLU's gradient.
        passes = ((grad != 0) & ~closed).flatten(1).any(dim=1).view(-1, *([1] * (x.dim() - 1)))
        # Otherwise closed units pass gradient too, except where it would push them further down:
        # grad is d(loss)/d(output), and positive means "lower this".
        return grad.masked_fill(closed & (passes | (grad > 0)), 0)


class RedirectReLU(TorchFunctionMode):
    """Within this context, every ReLU redirects its gradient as described above."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in RELUS:
            return _RedirectedReLU.apply(args[0])
        return func(*args, **(kwargs or {}))
