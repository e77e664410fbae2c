"""Benchmark fv's engine, and with --vs-lucent, Lucent on the same units, model and steps.

Prints one JSON line. With --params, also fourier, maco and cppn side by side on the same units. Timings are wall-clock seconds of rendering only (the model load is timed
apart), measured side by side in one process so their ratios are comparable on a noisy machine.

    python benchmarks/bench.py --layer mixed4a --units 8 --steps 64 --size 128 --device cpu --vs-lucent

Lucent is installed by benchmarks/install_lucent.sh into benchmarks/.lucent.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
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
from fvcli.layer_keys import infer_layout  # noqa: E402
from fvcli.models import load_model  # noqa: E402
from fvcli.normalization import IMAGENET  # noqa: E402
from fvcli.objectives import batch_values, channel  # noqa: E402
from fvcli.redirect import REDIRECT_STEPS  # noqa: E402
from fvcli.settings import DEFAULT_LR, PARAM_LR, RenderSettings  # noqa: E402
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


def run_fv(model, key, layout, channels, settings, device, batch_size, compiled=None) -> tuple[float, torch.Tensor]:
    """Seconds to render the units with fv's engine, and the final images (N, 3, H, W) on the CPU."""
    objectives = [channel(key, c, layout=layout) for c in channels]
    seeds = list(range(len(channels)))
    sync(device)
    started = time.perf_counter()
    images = []
    for i in range(0, len(objectives), batch_size):
        result = render_batch(model, objectives[i : i + batch_size], seeds[i : i + batch_size], settings, device, compiled=compiled)
        images.append(result.images)
    sync(device)
    return time.perf_counter() - started, torch.cat(images)


def run_lucent(module, layer: str, channels, steps: int, size: int, canvas: int, batched: bool, device, chunk: int = 64) -> tuple[float, torch.Tensor]:
    """Lucent's render_vis with its standard transforms, Adam at lr 0.05 and a Fourier image;
    `fixed_image_size` = fv's transformed size, so both run the model on images of one size.
    Batched, objectives go `chunk` at a time: Lucent sums them recursively, and 512 at once exceed
    Python's recursion limit. Returns the seconds and the final images (N, 3, H, W)."""
    sys.path.insert(0, str(ROOT / "benchmarks" / ".lucent"))
    from lucent.optvis import objectives, param, render, transform

    sync(device)
    started = time.perf_counter()
    groups = [channels[i : i + chunk] for i in range(0, len(channels), chunk)] if batched else [[c] for c in channels]
    images = []
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
        final = render.render_vis(
            model, objective, param_f, transforms=transform.standard_transforms, thresholds=(steps,),
            show_image=False, progress=False, fixed_image_size=canvas,
        )[-1]
        images.append(torch.from_numpy(final).permute(0, 3, 1, 2).float())
    sync(device)
    return time.perf_counter() - started, torch.cat(images)


def objective_of_8bit_images(module, key: str, layout, channels, images: torch.Tensor, normalization, device) -> list[float]:
    """Each unit's objective on its final image saved as 8 bits, through one float32 copy of the
    model (unfolded, no autocast), so that both tools' images are judged alike."""
    quantized = (images.clamp(0, 1) * 255).round() / 255
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in normalization)
    values = []
    with torch.no_grad():
        for i in range(0, len(channels), 64):
            x = ((quantized[i : i + 64] - mean) / std).to(device)
            acts = forward_to(module, x, [key])
            values += batch_values([channel(key, c, layout=layout) for c in channels[i : i + 64]], acts).cpu().tolist()
    return values


def compile_probe(model, key: str, units: int, settings, device, modes: list[str], steps: int = 64) -> dict:
    """Does torch.compile pay? fv's render of `units` images for `steps` steps eagerly and with the
    truncated network compiled in each mode (fvcli.compiled; the first 16 steps run eagerly in
    both, for the ReLU redirect), side by side: the compile time, and the seconds a step."""
    from fvcli.compiled import CompiledForward

    layout = infer_layout(layer_shapes(model.module, [key], settings.size, device)[key])
    probe = dataclasses.replace(settings, steps=steps)

    def seconds(compiled=None) -> float:
        return run_fv(model, key, layout, list(range(units)), probe, device, units, compiled)[0]

    seconds()  # warm-up
    eager = seconds()
    result = {"eager_s_per_step": round(eager / steps, 5)}
    for mode in modes:
        torch._dynamo.reset()
        forward = CompiledForward(model.module, (key,), mode=mode)
        first = seconds(forward)
        again = seconds(forward)
        compile_s = forward.compile_seconds
        saved = (eager - again) / (steps - REDIRECT_STEPS)
        result[mode] = {
            "compile_s": round(compile_s, 2),
            "s_per_step": round(again / steps, 5),
            "compiled_steps_vs_eager": round((eager - again) / (steps - REDIRECT_STEPS) / (eager / steps), 3) if eager else None,
            "break_even_steps": round(compile_s / saved) if saved > 0 else None,
            "first_run_s": round(first, 2),
        }
    eager_again = seconds()  # the machine may have changed meanwhile
    result["eager_again_s_per_step"] = round(eager_again / steps, 5)
    return result


def overhead_probe(device, units: int = 512, steps: int = 32) -> dict:
    """fv's own per-step work apart from the model's: a near-free model (a 1x1 convolution at
    8 px) and `units` random directions in one batch. Each step with the standard transforms, with
    a plain pad to the same canvas (their difference is what the random transforms cost), the
    model's own forward and backward alone, and the transform draws alone."""
    from fvcli.models import LoadedModel
    from fvcli.objectives import Direction
    from fvcli.transforms import STANDARD, Draws

    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 64, 1).eval().to(device, memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)
    model = LoadedModel("conv1x1", torch.nn.Sequential(net), "a 1x1 convolution", "random")
    layout = infer_layout((1, 64, 8, 8))
    vectors = torch.nn.functional.normalize(torch.randn(units, 64), dim=1)
    objectives = [Direction("0", v, f"d{i}", layout) for i, v in enumerate(vectors)]
    seeds = list(range(units))
    canvas = Pipeline(STANDARD).canvas(8, 8)[0]

    def per_step(transforms) -> float:
        settings = RenderSettings(steps=steps, size=8, transforms=transforms, dtype="float32")
        render_batch(model, objectives, seeds, settings, device)  # warm-up
        sync(device)
        started = time.perf_counter()
        render_batch(model, objectives, seeds, settings, device)
        sync(device)
        return (time.perf_counter() - started) / steps

    standard = per_step("standard")
    padded = per_step((("pad", (canvas - 8) // 2),))
    x = torch.rand(units, 3, canvas, canvas, device=device, requires_grad=True)

    def model_step() -> None:
        x.grad = None
        net(x.contiguous(memory_format=torch.channels_last)).mean().backward()

    for _ in range(3):
        model_step()
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        model_step()
    sync(device)
    model_s = (time.perf_counter() - started) / steps
    pipeline, draws = Pipeline(STANDARD), Draws(seeds, device)
    started = time.perf_counter()
    for step in range(512):
        pipeline.maps(draws, step)
    sync(device)
    draws_s = (time.perf_counter() - started) / 512
    return {
        "units": units,
        "canvas": canvas,
        "ms_per_step_standard_transforms": round(standard * 1e3, 3),
        "ms_per_step_plain_pad": round(padded * 1e3, 3),
        "ms_per_step_model_alone": round(model_s * 1e3, 3),
        "ms_per_step_transform_draws": round(draws_s * 1e3, 4),
    }


PARAM_LRS = {"fourier": DEFAULT_LR, **PARAM_LR}  # each parameterization's default --lr


def params_probe(model, key: str, layout, channels, settings, device, batch_size, lrs: dict, rounds: int = 2) -> dict:
    """The same units rendered with each parameterization at its learning rate, side by side: the
    objective reached (mean over units, on the final float images and on them saved as 8 bits)
    and the seconds a step. Each is timed `rounds` times, interleaved, and the fastest counts, so
    that a busy machine slows them alike."""
    seconds: dict[str, float] = {}
    starts: dict[str, list[float]] = {}
    finals: dict[str, list[float]] = {}
    images: dict[str, torch.Tensor] = {}
    for name, lr in lrs.items():  # warm-up: one step each (allocations, kernel choices)
        run_fv(model, key, layout, channels[:batch_size], dataclasses.replace(settings, param=name, lr=lr, steps=1), device, batch_size)
    for _ in range(rounds):
        for name, lr in lrs.items():
            chosen = dataclasses.replace(settings, param=name, lr=lr)
            objectives = [channel(key, c, layout=layout) for c in channels]
            sync(device)
            started = time.perf_counter()
            results = [
                render_batch(model, objectives[i : i + batch_size], list(range(i, min(i + batch_size, len(channels)))), chosen, device)
                for i in range(0, len(channels), batch_size)
            ]
            sync(device)
            seconds[name] = min(seconds.get(name, float("inf")), time.perf_counter() - started)
            starts[name] = [v for r in results for v in r.start]
            finals[name] = [v for r in results for v in r.final]
            images[name] = torch.cat([r.images for r in results])
    table = {}
    for name, lr in lrs.items():
        quantized = objective_of_8bit_images(model.module, key, layout, channels, images[name], model.normalization, device)
        table[name] = {
            "lr": lr,
            "mean_objective_start": round(sum(starts[name]) / len(channels), 4),
            "mean_objective_final": round(sum(finals[name]) / len(channels), 4),
            "mean_objective_8bit": round(sum(quantized) / len(channels), 4),
            "units_risen": sum(f > s for f, s in zip(finals[name], starts[name])),
            "ms_per_step": round(seconds[name] / settings.steps * 1e3, 2),
        }
    base = table["fourier"]
    ratios = {
        f"{name}_vs_fourier": {
            "time_per_step": round(row["ms_per_step"] / base["ms_per_step"], 2),
            "objective": round(row["mean_objective_final"] / base["mean_objective_final"], 3),
        }
        for name, row in table.items() if name != "fourier"
    }
    return {"units": len(channels), "table": table, "ratios": ratios}


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
    parser.add_argument("--vs-lucent", action="store_true", help="also render through Lucent, one unit at a time and batched, and compare the final objectives")
    parser.add_argument("--lucent-batched-only", action="store_true", help="with --vs-lucent, leave out Lucent one unit at a time (hours for 512 units)")
    parser.add_argument("--lucent-chunk", type=int, default=64, help="objectives a batched Lucent call optimizes together")
    parser.add_argument("--compile-probe", action="store_true", help="also measure whether torch.compile of the truncated network pays for its compile time")
    parser.add_argument("--compile-modes", default="default", help="comma list of torch.compile modes for --compile-probe (default, max-autotune, max-autotune-no-cudagraphs, reduce-overhead)")
    parser.add_argument("--compile-steps", type=int, default=64, help="steps of each render --compile-probe times")
    parser.add_argument("--overhead", action="store_true", help="only measure fv's own per-step work apart from the model's (a near-free model, 512 directions)")
    parser.add_argument("--no-fold", action="store_true", help="keep BatchNorms unfolded (to measure what folding gains)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"], help="fv's model arithmetic (see fv render --dtype)")
    parser.add_argument("--params", action="store_true", help="render the units with fourier, maco and cppn side by side (each at its default --lr): objective reached and time a step")
    parser.add_argument("--maco-lr", type=float, default=PARAM_LRS["maco"], help="learning rate of maco in --params")
    parser.add_argument("--cppn-lr", type=float, default=PARAM_LRS["cppn"], help="learning rate of cppn in --params")
    args = parser.parse_args()

    device = pick_device(args.device)
    if args.overhead:
        result = {"device": device_name(device), "overhead": overhead_probe(device, units=args.units)}
        result["commit"], result["date"], result["torch"] = commit(), datetime.date.today().isoformat(), torch.__version__
        print(json.dumps(result))
        return
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
    fv_s, fv_images = run_fv(model, key, layout, channels, settings, device, batch_size)
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
    if args.params:
        lrs = {"fourier": settings.lr, "maco": args.maco_lr, "cppn": args.cppn_lr}
        result["params"] = params_probe(model, key, layout, channels, settings, device, batch_size, lrs)
    if args.compile_probe:
        modes = [m for m in args.compile_modes.split(",") if m]
        result["compile_probe"] = compile_probe(model, key, min(args.units, batch_size), settings, device, modes, steps=args.compile_steps)
    if args.vs_lucent:
        module = unfolded
        lucent_layer = key.replace(".", "_")
        one = None
        if not args.lucent_batched_only:
            one, _ = run_lucent(module, lucent_layer, channels, args.steps, args.size, canvas, batched=False, device=device)
        batched, lucent_images = run_lucent(module, lucent_layer, channels, args.steps, args.size, canvas, batched=True, device=device, chunk=args.lucent_chunk)
        best = batched if one is None else min(one, batched)
        result["lucent"] = {"one_at_a_time_s": None if one is None else round(one, 3), "batched_s": round(batched, 3), "chunk": args.lucent_chunk}
        result["ratios"] = {
            "fv_vs_lucent_one_at_a_time": None if one is None else round(one / fv_s, 2),
            "fv_vs_lucent_batched": round(batched / fv_s, 2),
            "fv_vs_lucent_best": round(best / fv_s, 2),
        }
        judge = copy.deepcopy(unfolded).float()
        fv_values = objective_of_8bit_images(judge, key, layout, channels, fv_images, model.normalization, device)
        lucent_values = objective_of_8bit_images(judge, key, layout, channels, lucent_images, IMAGENET, device)
        result["quality"] = {
            "fv_mean_objective": round(sum(fv_values) / len(fv_values), 4),
            "lucent_mean_objective": round(sum(lucent_values) / len(lucent_values), 4),
            "units_fv_at_least_lucent": sum(a >= b for a, b in zip(fv_values, lucent_values)),
            "units": len(channels),
        }
    result["commit"], result["date"] = commit(), datetime.date.today().isoformat()
    result["python"], result["torch"] = platform.python_version(), torch.__version__
    print(json.dumps(result))


if __name__ == "__main__":
    main()
