"""Where fv's step time goes: torch's profiler over fv's render of a batch, grouped by operator.

    python benchmarks/profile_step.py                                  # Lite0's logits, 16 images, 128 px
    python benchmarks/profile_step.py --model googlenet --weights random --target mixed4a:0-15
    python benchmarks/profile_step.py --layouts     # the model's pass alone: channels_last, bf16

Prints the operators that take the most self time (forward and backward together), and the share
of the model's convolutions (depthwise apart), of the transforms' resampling (grid_sample), of the
image's parameterization (FFT) and of the rest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fvcli  # noqa: E402

GROUPS = {
    "convolutions": ("convolution", "conv2d", "mkldnn_convolution", "_convolution", "cudnn_convolution"),
    "resampling (transforms)": ("grid_sampler", "grid_sample"),
    "FFT (parameterization)": ("fft",),
    "elementwise and activations": ("hardtanh", "relu", "add", "mul", "sub", "div", "threshold", "clamp", "sigmoid"),
    "copies and layout": ("copy_", "to", "contiguous", "clone", "_to_copy", "empty"),
}


def group_of(name: str) -> str:
    lowered = name.lower()
    for group, keys in GROUPS.items():
        if any(key in lowered for key in keys):
            return group
    return "other"


def layouts(model_name: str, weights: str, images: int, size: int, rounds: int = 3) -> None:
    """The model's forward and backward pass alone, in each memory layout and arithmetic, in turn
    for `rounds` rounds (the fastest of each counts): what fv's channels_last and bf16 autocast buy
    over the contiguous float32 a Lucent user runs."""
    import time

    from fvcli.models.registry import load_model

    module = load_model(model_name, weights, 0, quiet=True).module
    x0 = torch.rand(images, 3, size, size)
    best: dict[tuple[str, bool], float] = {}
    for _ in range(rounds):
        for layout, memory_format in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
            module.to(memory_format=memory_format)
            for bf16 in (False, True):
                def step() -> None:
                    x = x0.clone().to(memory_format=memory_format).requires_grad_(True)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        y = module(x)
                    y.float().flatten(1)[:, :images].sum().backward()

                step()  # warm-up
                started = time.perf_counter()
                for _ in range(3):
                    step()
                seconds = (time.perf_counter() - started) / 3
                best[(layout, bf16)] = min(seconds, best.get((layout, bf16), float("inf")))
    for (layout, bf16), seconds in best.items():
        print(f"{layout:<14} {'bf16 autocast' if bf16 else 'float32':<14} {seconds:.3f} s a forward and backward of {images} images at {size} px")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default="default")
    parser.add_argument("--target", default="output:" + ",".join(str(20 * i) for i in range(16)))
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--layouts", action="store_true", help="instead: time the model's pass alone in each memory layout and arithmetic")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.layouts:
        layouts(args.model, args.weights, 16, args.size)
        return
    options = dict(weights=args.weights, steps=args.steps, size=args.size, threads=args.threads, device="cpu", compile="off")
    fvcli.render(args.model, args.target, **{**options, "steps": 2})  # warm-up: the model loads, kernels pick their paths
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        fvcli.render(args.model, args.target, **options)
    events = profile.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.model} {args.target}: {args.steps} steps at {args.size} px, {args.threads} threads; self CPU time {total / 1e6:.2f} s")
    print(f"{'operator':<44} {'self s':>8} {'share':>7} {'calls':>7}")
    for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        print(f"{event.key[:44]:<44} {event.self_cpu_time_total / 1e6:>8.3f} {event.self_cpu_time_total / total:>7.1%} {event.count:>7}")
    groups: dict[str, float] = {}
    for event in events:
        groups[group_of(event.key)] = groups.get(group_of(event.key), 0.0) + event.self_cpu_time_total
    print("\nby kind:")
    for group, seconds in sorted(groups.items(), key=lambda item: -item[1]):
        print(f"  {group:<30} {seconds / 1e6:>8.3f} s {seconds / total:>7.1%}")


if __name__ == "__main__":
    main()
