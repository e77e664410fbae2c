"""PReLU's backward pass for frozen weights, without the slow part of torch's.

torch's PReLU backward (`_prelu_kernel_backward`) always computes the weight's gradient too, as a
tensor of the input's size, in a kernel that compares, selects and multiplies element by element,
slowly on a CPU: for MTCNN's ONet (five PReLUs) on the development CPU it took a seventh of
an optimization step's CPU time, seven times the PReLUs' forward pass (BENCHMARKS.md).
fv never trains the weights, so only the input's gradient is needed: the gradient where the input
is positive, and the gradient times the weight elsewhere. Computed as one multiplication by a slope
that is exactly 1 or exactly the weight, from float (not boolean) intermediates, which the CPU's
vector kernels take, and in place, it is the same number as torch's, bit for bit, in about half
the time (in float32 and under bf16 autocast; measured in BENCHMARKS.md).

The mode intercepts every `prelu` call, functional or module (nn.PReLU calls F.prelu), so it works
on any model without editing it. The forward pass is torch's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

PRELUS = {F.prelu, torch.prelu, Tensor.prelu}  # every way to call a PReLU (nn.PReLU calls F.prelu, which is torch.prelu)


class _FrozenPReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return torch.prelu(x, weight)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        x, weight = ctx.saved_tensors
        # The weight's values apply along dimension 1 (the channels), as torch's prelu applies them.
        if x.dim() > 1 and weight.numel() > 1:
            weight = weight.view(-1, *([1] * (x.dim() - 2)))
        # 1.0 where x > 0, else 0.0 (also for a NaN input, where torch's comparison is false too).
        open_ = torch.gt(x, 0, out=torch.empty_like(x, dtype=grad.dtype))
        # exactly 1 (1 + 0), or exactly the weight (0 + weight), then times the gradient: in place
        slope = (1 - open_).mul_(weight.to(grad.dtype)).add_(open_)
        return slope.mul_(grad).to(x.dtype), None


class FrozenPReLU(TorchFunctionMode):
    """Within this context, a PReLU whose weight needs no gradient and whose input does runs the
    backward pass above; any other call is torch's own."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in PRELUS and torch.is_grad_enabled():
            x, weight = (*args, *kwargs.values())[:2]
            if isinstance(x, Tensor) and isinstance(weight, Tensor) and x.requires_grad and not weight.requires_grad:
                return _FrozenPReLU.apply(x, weight)
        return func(*args, **kwargs)


def has_prelu(module: torch.nn.Module) -> bool:
    """Whether a model has PReLU modules: the mode is only worth its per-call cost for those."""
    return any(isinstance(m, torch.nn.PReLU) for m in module.modules())
