"""Benchmark fv's engine, and with --vs-lucent, Lucent on the same units, model and steps.

Prints one JSON line. Timings are wall-clock seconds of rendering only (the model load is timed
apart), measured side by side in one process so their ratios are comparable on a noisy machine.

    python benchmarks/bench.py --layer mixed4a --units 8 --steps 64 --size 128 --device cpu --vs-lucent

Lucent is installed by benchmarks/install_lucent.sh into benchmarks/.lucent.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fvcli.capture import forward_to, layer_shapes  # noqa: E402
from fvcli.devices import device_name, pick_device  # noqa: E402
from fvcli.engine import dtype_name, render_batch  # noqa: E402
from fvcli.fold import fold_batchnorms  # noqa: E402
from fvcli.layers import infer_layout  # noqa: E402
from fvcli.models import load_model  # noqa: E402
from fvcli.objectives import batch_values, channel  # noqa: E402
from fvcli.settings import RenderSettings  # noqa: E402
from fvcli.transforms import Pipeline  # noqa: E402

# Dense bf16 tensor-core peak from the vendor's data sheet, for the fraction of peak reached.
PEAK_FLOPS = {"NVIDIA H200": 989e12, "NVIDIA H100 80GB HBM3": 989e12}


def commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak RSS (Linux: KiB)


def model_flops_per_image_step(model, key: str, layout, canvas: int, normalization, device) -> int:
    """FLOPs of the model's part of one optimization step for one image: the forward pass to the
    layer and the backward pass to the image (no weight gradients), at the transformed size."""
    x = torch.rand(1, 3, canvas, canvas, device=device, requires_grad=True)
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in normalization)
    with FlopCounterMode(display=False) as counter:
        value = batch_values([channel(key, 0, layout=layout)], forward_to(model.module, (x - mean) / std, [key]))
        value.sum().backward()
    return counter.get_total_flops()


def run_fv(model, key, layout, channels, settings, device, batch_size) -> float:
    objectives = [channel(key, c, layout=layout) for c in channels]
    seeds = list(range(len(channels)))
    sync(device)
    started = time.perf_counter()
    for i in range(0, len(objectives), batch_size):
        render_batch(model, objectives[i : i + batch_size], seeds[i : i + batch_size], settings, device)
    sync(device)
    return time.perf_counter() - started


def run_lucent(module, layer: str, channels, steps: int, size: int, canvas: int, batched: bool, device) -> float:
    """Lucent's render_vis with its standard transforms, Adam at lr 0.05 and a Fourier image;
    `fixed_image_size` = fv's transformed size, so both run the model on images of one size."""
    sys.path.insert(0, str(ROOT / "benchmarks" / ".lucent"))
    from lucent.optvis import objectives, param, render, transform

    sync(device)
    started = time.perf_counter()
    groups = [channels] if batched else [[c] for c in channels]
    for group in groups:
        # Lucent never removes its hooks: each call gets a clean copy, in the default memory layout
        # a Lucent user has (fv converts its own copy to channels_last).
        model = copy.deepcopy(module).to(memory_format=torch.contiguous_format)
        if len(group) == 1:
            objective = objectives.channel(layer, group[0])
            param_f = lambda: param.image(size)  # noqa: E731
        else:
            objective = sum(objectives.channel(layer, c, batch=i) for i, c in enumerate(group))
            param_f = lambda n=len(group): param.image(size, batch=n)  # noqa: E731
        render.render_vis(
            model, objective, param_f, transforms=transform.standard_transforms, thresholds=(steps,),
            show_image=False, progress=False, fixed_image_size=canvas,
        )
    sync(device)
    return time.perf_counter() - started


def compile_probe(model, key: str, layout, units: int, canvas: int, bf16: bool, device, steps: int = 20) -> dict:
    """Does torch.compile pay? One model step (forward to the layer, backward to the images) eager
    and compiled, side by side, and the compile time. fv's forward stops at the layer through a
    hook that raises, which Dynamo cannot trace; so both sides run the same plain truncated
    network (the model's children up to the layer; GoogLeNet-style models), which is what a
    compiled engine would run."""
    names = [name for name, _ in model.module.named_children()]
    top = key.split(".")[0]
    if top not in names:
        return {"skipped": f"{key} is not a direct child of the model"}
    trunk = torch.nn.Sequential(*[getattr(model.module, n) for n in names[: names.index(top) + 1]])
    x = torch.rand(units, 3, canvas, canvas, device=device, requires_grad=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def step(f) -> None:
        x.grad = None
        with autocast:
            y = f(x.contiguous(memory_format=torch.channels_last))
        y[:, :units].float().mean().backward()

    def per_step(f) -> float:
        for _ in range(3):
            step(f)
        sync(device)
        started = time.perf_counter()
        for _ in range(steps):
            step(f)
        sync(device)
        return (time.perf_counter() - started) / steps

    eager = per_step(trunk)
    compiled_trunk = torch.compile(trunk)
    started = time.perf_counter()
    step(compiled_trunk)
    sync(device)
    compile_s = time.perf_counter() - started
    compiled = per_step(compiled_trunk)
    eager_again = per_step(trunk)  # the machine may have changed meanwhile: eager on both sides
    eager = min(eager, eager_again)
    saved = eager - compiled
    return {
        "compile_and_first_step_s": round(compile_s, 2),
        "eager_step_s": round(eager, 5),
        "compiled_step_s": round(compiled, 5),
        "speedup": round(eager / compiled, 3),
        "break_even_steps": round(compile_s / saved) if saved > 0 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="googlenet")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--layer", default="mixed4a")
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="images per batch (default: all units on CUDA, 16 on a CPU)")
    parser.add_argument("--vs-lucent", action="store_true", help="also render through Lucent, one unit at a time and batched")
    parser.add_argument("--compile-probe", action="store_true", help="also measure whether torch.compile of the truncated network pays for its compile time")
    parser.add_argument("--no-fold", action="store_true", help="keep BatchNorms unfolded (to measure what folding gains)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"], help="fv's model arithmetic (see fv render --dtype)")
    args = parser.parse_args()

    device = pick_device(args.device)
    started = time.perf_counter()
    model = load_model(args.model, args.weights, seed=0, quiet=True)
    model.module.to(device, memory_format=torch.channels_last)
    load_s = time.perf_counter() - started
    key = model.resolve_layer(args.layer)
    layout = infer_layout(layer_shapes(model.module, [key], args.size, device)[key])
    unfolded = copy.deepcopy(model.module)  # for Lucent, which would not fold
    probe = torch.rand(2, 3, args.size, args.size, device=device).contiguous(memory_format=torch.channels_last)
    folded = 0 if args.no_fold else fold_batchnorms(model.module, [key], probe)
    channels = list(range(args.units))
    settings = RenderSettings(model=args.model, weights=args.weights, steps=args.steps, size=args.size, dtype=args.dtype)
    canvas = Pipeline.from_setting(settings.transforms).canvas(args.size, args.size)[0]
    batch_size = args.batch_size or (args.units if device.type == "cuda" else min(args.units, 16))
    flops = model_flops_per_image_step(model, key, layout, canvas, model.normalization, device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fv_s = run_fv(model, key, layout, channels, settings, device, batch_size)
    image_steps = args.units * args.steps
    achieved = flops * image_steps / fv_s
    peak = PEAK_FLOPS.get(device_name(device))
    result = {
        "config": {**{k: v for k, v in vars(args).items() if k != "vs_lucent"}, "batch_size": batch_size, "canvas": canvas},
        "device": device_name(device),
        "dtype": dtype_name(settings, device),
        "load_s": round(load_s, 3),
        "fv": {
            "wall_s": round(fv_s, 3),
            "image_steps_per_s": round(image_steps / fv_s, 2),
            "model_flops_per_image_step": flops,
            "achieved_tflops": round(achieved / 1e12, 4),
            "peak_fraction": round(achieved / peak, 4) if peak else None,
            "peak_memory_mb": round(peak_memory_mb(device), 1),
            "batchnorms_folded": folded,
        },
    }
    if args.compile_probe:
        from fvcli.devices import use_bf16

        result["compile_probe"] = compile_probe(model, key, layout, min(args.units, batch_size), canvas, use_bf16(args.dtype, device), device)
    if args.vs_lucent:
        module = unfolded
        one = run_lucent(module, key.replace(".", "_"), channels, args.steps, args.size, canvas, batched=False, device=device)
        batched = run_lucent(module, key.replace(".", "_"), channels, args.steps, args.size, canvas, batched=True, device=device)
        result["lucent"] = {"one_at_a_time_s": round(one, 3), "batched_s": round(batched, 3)}
        result["ratios"] = {
            "fv_vs_lucent_one_at_a_time": round(one / fv_s, 2),
            "fv_vs_lucent_batched": round(batched / fv_s, 2),
            "fv_vs_lucent_best": round(min(one, batched) / fv_s, 2),
        }
    result["commit"], result["date"] = commit(), datetime.date.today().isoformat()
    result["python"], result["torch"] = platform.python_version(), torch.__version__
    print(json.dumps(result))


if __name__ == "__main__":
    main()
