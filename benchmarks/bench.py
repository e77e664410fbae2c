"""Benchmark fv's engine, and with --vs-lucent, Lucent on the same units, model and steps.

Prints one JSON line. With --params, also fourier, maco and cppn side by side on the same units. Timings are wall-clock seconds of rendering only (the model load is timed
apart), measured side by side in one process so their ratios are comparable on a noisy machine.

    python benchmarks/bench.py --layer mixed4a --units 8 --steps 64 --size 128 --device cpu --vs-lucent

`--model` takes whatever `fv render --model` takes (a registry name, a factory MODULE:FUNC or
FILE.py:FUNC, a TorchScript file), `--normalize` what `fv render --normalize` takes, and
`--channels` fv's channel lists; e.g. a trained network that ships in facenet-pytorch's wheel:

    python benchmarks/bench.py --model facenet_pytorch.models.mtcnn:ONet --weights default --size 48 \
        --normalize 0.5,0.5,0.5/0.502,0.502,0.502 --layer dense6_1 --channels 1 --repeat 8 --vs-lucent

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
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fvcli.models.capture import forward_to, layer_shapes  # noqa: E402
from fvcli.run.devices import device_name, pick_device  # noqa: E402
from fvcli.optvis.engine import dtype_name, input_normalization, render_batch  # noqa: E402
from fvcli.models.fold import fold_batchnorms  # noqa: E402
from fvcli.models.layer_keys import infer_layout, split_key  # noqa: E402
from fvcli.models.registry import load_model  # noqa: E402
from fvcli.models.normalization import IMAGENET  # noqa: E402
from fvcli.optvis.objectives import batch_values, channel  # noqa: E402
from fvcli.optvis.redirect import REDIRECT_STEPS  # noqa: E402
from fvcli.specs.settings import DEFAULT_LR, PARAM_LR, RenderSettings  # noqa: E402
from fvcli.specs.converters import normalize as normalize_setting  # noqa: E402
from fvcli.specs.channels import parse_channel_item  # noqa: E402
from fvcli.optvis.transforms import Pipeline  # noqa: E402

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


def layer_key(model, name: str) -> str:
    """The layer key of a layer name as fv's targets resolve it: `mixed4a` -> `inception4a`,
    `output@2` -> `@2` (an element of the model's own output)."""
    path, element = split_key(name)
    return model.resolve_layer(path) + (f"@{element}" if element is not None else "")


def model_input_size(module, key: str, size: int, canvas: int, device) -> int | None:
    """The size fv resizes transformed images to before the model, as `fv render` decides it
    (fvcli.run.runner's Run._shape): None (the model runs on the transforms' canvas), or `size` for a
    model that computes `key` at the image's size but not on the larger canvas (a Linear layer
    that fixes the size, as in MTCNN's ONet)."""
    if canvas == size:
        return None
    try:
        layer_shapes(module, [key], canvas, device)
    except Exception:  # noqa: BLE001 - whatever the model raises on a size it cannot take
        return size
    return None


def mean_std(normalization, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) as (1, C, 1, 1) tensors; (0, 1) for a model that takes [0, 1] as it is."""
    if normalization is None:
        return torch.zeros(1, 1, 1, 1, device=device), torch.ones(1, 1, 1, 1, device=device)
    return tuple(torch.tensor(v, device=device).view(1, -1, 1, 1) for v in normalization)


def model_flops_per_image_step(model, key: str, layout, canvas: int, normalization, device) -> int:
    """FLOPs of the model's part of one optimization step for one image: the forward pass to the
    layer and the backward pass to the image (no weight gradients), at the size the model sees."""
    x = torch.rand(1, 3, canvas, canvas, device=device, requires_grad=True)
    mean, std = mean_std(normalization, device)
    with FlopCounterMode(display=False) as counter:
        value = batch_values([channel(key, 0, layout=layout)], forward_to(model.module, (x - mean) / std, [key]))
        value.sum().backward()
    return counter.get_total_flops()


def run_fv(model, key, layout, channels, settings, device, batch_size, compiled=None, input_size=None) -> tuple[float, torch.Tensor]:
    """Seconds to render the units with fv's engine, and the final images (N, 3, H, W) on the CPU.
    Each image has its own seed (its position), so a channel listed twice gives two images."""
    objectives = [channel(key, c, layout=layout) for c in channels]
    seeds = list(range(len(channels)))
    sync(device)
    started = time.perf_counter()
    images = []
    for i in range(0, len(objectives), batch_size):
        result = render_batch(
            model, objectives[i : i + batch_size], seeds[i : i + batch_size], settings, device, compiled=compiled, input_size=input_size
        )
        images.append(result.images)
    sync(device)
    return time.perf_counter() - started, torch.cat(images)


def run_lucent(
    module, layer: str, channels, steps: int, size: int, canvas: int, batched: bool, device, chunk: int = 64,
    normalization=IMAGENET,
) -> tuple[float, torch.Tensor]:
    """Lucent's render_vis with its standard transforms, Adam at lr 0.05 and a Fourier image;
    `fixed_image_size` = the size fv's model sees (its transformed canvas, or the size it resizes
    that to), so both run the model on images of one size. `normalization`: ImageNet's is Lucent's
    own preprocessing; any other (None: none) replaces it, as a transform after Lucent's standard
    ones, as a Lucent user would write it. Batched, objectives go `chunk` at a time: Lucent sums
    them recursively, and 512 at once exceed Python's recursion limit. Returns the seconds and the
    final images (N, 3, H, W)."""
    sys.path.insert(0, str(ROOT / "benchmarks" / ".lucent"))
    from lucent.optvis import objectives, param, render, transform

    own_preprocessing = normalization == IMAGENET
    transforms = list(transform.standard_transforms)
    if not own_preprocessing and normalization is not None:
        mean, std = mean_std(normalization, device)
        transforms.append(lambda x: (x - mean) / std)

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
        with warnings.catch_warnings():  # Lucent warns once a call when its forward stops at a size its later layers cannot take
            warnings.simplefilter("ignore")
            final = render.render_vis(
                model, objective, param_f, transforms=transforms, thresholds=(steps,), preprocess=own_preprocessing,
                show_image=False, progress=False, fixed_image_size=canvas,
            )[-1]
        images.append(torch.from_numpy(final).permute(0, 3, 1, 2).float())
    sync(device)
    return time.perf_counter() - started, torch.cat(images)


def objective_of_8bit_images(module, key: str, layout, channels, images: torch.Tensor, normalization, device, size: int | None = None) -> list[float]:
    """Each unit's objective on its final image saved as 8 bits, through one float32 copy of the
    model (unfolded, no autocast), so that both tools' images are judged alike. `size`: the 8-bit
    image is first resized to it, by area averaging (as MTCNN resizes its crops for RNet and ONet)."""
    quantized = (images.clamp(0, 1) * 255).round() / 255
    if size is not None and quantized.shape[-2:] != (size, size):
        quantized = F.interpolate(quantized, size=(size, size), mode="area")
    mean, std = mean_std(normalization, "cpu")
    values = []
    with torch.no_grad():
        for i in range(0, len(channels), 64):
            x = ((quantized[i : i + 64] - mean) / std).to(device)
            acts = forward_to(module, x, [key])
            values += batch_values([channel(key, c, layout=layout) for c in channels[i : i + 64]], acts).cpu().tolist()
    return values


def compile_probe(model, key: str, units: int, settings, device, modes: list[str], steps: int = 64, input_size=None) -> dict:
    """Does torch.compile pay? fv's render of `units` images for `steps` steps eagerly and with the
    truncated network compiled in each mode (fvcli.models.compiled; the first 16 steps run eagerly in
    both, for the ReLU redirect), side by side: the compile time, and the seconds a step."""
    from fvcli.models.compiled import CompiledForward

    layout = infer_layout(layer_shapes(model.module, [key], settings.size, device)[key])
    probe = dataclasses.replace(settings, steps=steps)

    def seconds(compiled=None) -> float:
        return run_fv(model, key, layout, list(range(units)), probe, device, units, compiled, input_size)[0]

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
    from fvcli.models.registry import LoadedModel
    from fvcli.optvis.objectives import Direction
    from fvcli.optvis.transforms import STANDARD, Draws

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


def prelu_probe(render, rounds: int) -> dict:
    """fv's render with torch's PReLU backward and with fvcli.optvis.prelu's, alternately, `rounds` times
    after a warm-up of each: wall and CPU seconds of each (the fastest counts) and their ratios, and
    whether the final images are the same bit for bit."""
    import fvcli.optvis.engine

    def once(plain: bool) -> tuple[float, float, torch.Tensor]:
        original = fvcli.optvis.engine.has_prelu
        if plain:
            fvcli.optvis.engine.has_prelu = lambda module: False
        try:
            cpu = time.process_time()
            wall, images = render()
            return wall, time.process_time() - cpu, images
        finally:
            fvcli.optvis.engine.has_prelu = original

    once(True), once(False)
    times = {"torch": [], "fv": []}
    images = {}
    for _ in range(rounds):
        for name in times:
            wall, cpu, images[name] = once(name == "torch")
            times[name].append((wall, cpu))
    best = {name: (min(w for w, _ in t), min(c for _, c in t)) for name, t in times.items()}
    return {
        "rounds": [{f"{name}_{what}_s": round(times[name][r][i], 3) for name in times for i, what in enumerate(("wall", "cpu"))} for r in range(rounds)],
        "torch_prelu_wall_s": round(best["torch"][0], 3),
        "fv_prelu_wall_s": round(best["fv"][0], 3),
        "wall_ratio": round(best["torch"][0] / best["fv"][0], 2),
        "torch_prelu_cpu_s": round(best["torch"][1], 3),
        "fv_prelu_cpu_s": round(best["fv"][1], 3),
        "cpu_ratio": round(best["torch"][1] / best["fv"][1], 2),
        "images_identical": torch.equal(images["torch"], images["fv"]),
    }


PARAM_LRS = {"fourier": DEFAULT_LR, **PARAM_LR}  # each parameterization's default --lr


def params_probe(model, key: str, layout, channels, settings, device, batch_size, lrs: dict, rounds: int = 2, normalization=IMAGENET, input_size=None) -> dict:
    """The same units rendered with each parameterization at its learning rate, side by side: the
    objective reached (mean over units, on the final float images and on them saved as 8 bits)
    and the seconds a step. Each is timed `rounds` times, interleaved, and the fastest counts, so
    that a busy machine slows them alike."""
    seconds: dict[str, float] = {}
    starts: dict[str, list[float]] = {}
    finals: dict[str, list[float]] = {}
    images: dict[str, torch.Tensor] = {}
    for name, lr in lrs.items():  # warm-up: one step each (allocations, kernel choices)
        run_fv(model, key, layout, channels[:batch_size], dataclasses.replace(settings, param=name, lr=lr, steps=1), device, batch_size, input_size=input_size)
    for _ in range(rounds):
        for name, lr in lrs.items():
            chosen = dataclasses.replace(settings, param=name, lr=lr)
            objectives = [channel(key, c, layout=layout) for c in channels]
            sync(device)
            started = time.perf_counter()
            results = [
                render_batch(model, objectives[i : i + batch_size], list(range(i, min(i + batch_size, len(channels)))), chosen, device, input_size=input_size)
                for i in range(0, len(channels), batch_size)
            ]
            sync(device)
            seconds[name] = min(seconds.get(name, float("inf")), time.perf_counter() - started)
            starts[name] = [v for r in results for v in r.start]
            finals[name] = [v for r in results for v in r.final]
            images[name] = torch.cat([r.images for r in results])
    table = {}
    for name, lr in lrs.items():
        quantized = objective_of_8bit_images(model.module, key, layout, channels, images[name], normalization, device)
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


@dataclasses.dataclass(frozen=True)
class CrossJudge:
    """Another network that judges the final images: CHANNEL of its layer KEY (mean over
    positions), on the 8-bit images resized to SIZE."""

    label: str
    module: torch.nn.Module
    key: str
    layout: object
    channel: int
    size: int


def load_cross_judges(specs, device) -> list[CrossJudge]:
    """`--cross-judge MODEL SIZE LAYER CHANNEL` each, loaded with their default weights, in float32."""
    judges = []
    for name, size, layer, index in specs:
        size, index = int(size), int(index)
        model = load_model(name, "default", seed=0, quiet=True)
        model.module.float().to(device)
        key = layer_key(model, layer)
        layout = infer_layout(layer_shapes(model.module, [key], size, device)[key])
        judges.append(CrossJudge(f"{name}@{size} {layer}:{index}", model.module, key, layout, index, size))
    return judges


def cross_judgments(judges: list[CrossJudge], images: torch.Tensor, normalization, device) -> dict[str, list[float]]:
    """Each other network's judgment of each final image, normalized as the rendered network's
    input is (the three MTCNN networks share theirs)."""
    return {
        j.label: objective_of_8bit_images(j.module, j.key, j.layout, [j.channel] * len(images), images, normalization, device, size=j.size)
        for j in judges
    }


def mean(values) -> float:
    return round(sum(values) / len(values), 4)


def versus_lucent(args, run_fv_again, fv_s: float, fv_cpu_s: float, fv_images, lucent_once, judge_images) -> dict:
    """fv against Lucent, `args.rounds` rounds, each tool once a round in turn (fv, Lucent one unit
    at a time, Lucent batched), so that a busy machine slows them alike; round 1's fv run is the
    one already measured. Times: each tool's fastest round, the ratios of those, and every round's
    times and fv-vs-Lucent-batched ratio, in wall seconds and in the process's CPU seconds (which
    other processes on the machine change less). Quality: every round's final images judged alike, each
    unit's value the mean over rounds (fv's images are the same each round on a CPU, Lucent's
    start from a new random image each call)."""
    rounds, fv_values, lucent_values = [], [], []
    fv_cpu = fv_cpu_s
    for r in range(args.rounds):
        if r > 0:
            cpu = time.process_time()
            fv_s, fv_images = run_fv_again()
            fv_cpu = time.process_time() - cpu
        one = None if args.lucent_batched_only else lucent_once(False)[0]
        cpu = time.process_time()
        batched, lucent_images = lucent_once(True)
        batched_cpu = time.process_time() - cpu
        rounds.append({
            "fv_s": round(fv_s, 3),
            "lucent_one_at_a_time_s": None if one is None else round(one, 3),
            "lucent_batched_s": round(batched, 3),
            "fv_vs_lucent_batched": round(batched / fv_s, 2),
            "fv_cpu_s": round(fv_cpu, 3),
            "lucent_batched_cpu_s": round(batched_cpu, 3),
            "fv_vs_lucent_batched_cpu": round(batched_cpu / fv_cpu, 2),
        })
        fv_values.append(judge_images(fv_images))
        lucent_values.append(judge_images(lucent_images))
    best = {k: min(r[k] for r in rounds) if rounds[0][k] is not None else None for k in ("fv_s", "lucent_one_at_a_time_s", "lucent_batched_s")}
    lucent_best = min(v for k, v in best.items() if k != "fv_s" and v is not None)
    result = {
        "lucent": {"one_at_a_time_s": best["lucent_one_at_a_time_s"], "batched_s": best["lucent_batched_s"], "chunk": args.lucent_chunk},
        "ratios": {
            "fv_vs_lucent_one_at_a_time": None if best["lucent_one_at_a_time_s"] is None else round(best["lucent_one_at_a_time_s"] / best["fv_s"], 2),
            "fv_vs_lucent_batched": round(best["lucent_batched_s"] / best["fv_s"], 2),
            "fv_vs_lucent_best": round(lucent_best / best["fv_s"], 2),
        },
    }
    if args.rounds > 1:
        result["rounds"] = rounds
        result["fv_best_s"] = best["fv_s"]
    quality = {}
    for name in fv_values[0]:  # the rendered network's objective first, then the other networks' judgments
        fv_units = [sum(r[name][i] for r in fv_values) / args.rounds for i in range(len(fv_values[0][name]))]
        lucent_units = [sum(r[name][i] for r in lucent_values) / args.rounds for i in range(len(fv_units))]
        quality[name] = {
            "fv_mean": mean(fv_units),
            "lucent_mean": mean(lucent_units),
            "units_fv_at_least_lucent": sum(a >= b for a, b in zip(fv_units, lucent_units)),
        }
    objective = quality.pop("objective")
    result["quality"] = {
        "fv_mean_objective": objective["fv_mean"],
        "lucent_mean_objective": objective["lucent_mean"],
        "units_fv_at_least_lucent": objective["units_fv_at_least_lucent"],
        "units": len(fv_values[0]["objective"]),
        "rounds_judged": args.rounds,
    }
    if quality:
        result["quality"]["other_networks"] = quality
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="googlenet", help="what fv render --model takes: a registry name, MODULE:FUNC or FILE.py:FUNC, a TorchScript file")
    parser.add_argument("--weights", default="random", help="what fv render --weights takes (default: random; a factory's own weights are `default`)")
    parser.add_argument("--normalize", default="model", help="what fv render --normalize takes: model, imagenet, none or MEAN,MEAN,MEAN/STD,STD,STD")
    parser.add_argument("--layer", default="mixed4a", help="a layer name as fv's targets write it (mixed4a, dense6_1, output@2)")
    parser.add_argument("--units", type=int, default=8, help="render channels 0 to UNITS-1 (unless --channels)")
    parser.add_argument("--channels", default=None, help="the channels to render, as fv writes them: 1, 0-7, 3,7,100-107")
    parser.add_argument("--repeat", type=int, default=1, help="render each channel this many times, each image from its own seed (Lucent: its own random start)")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="images per batch (default: all units on CUDA, 16 on a CPU)")
    parser.add_argument("--vs-lucent", action="store_true", help="also render through Lucent, one unit at a time and batched, and compare the final objectives")
    parser.add_argument("--lucent-batched-only", action="store_true", help="with --vs-lucent, leave out Lucent one unit at a time (hours for 512 units)")
    parser.add_argument("--lucent-chunk", type=int, default=64, help="objectives a batched Lucent call optimizes together")
    parser.add_argument("--rounds", type=int, default=1, help="with --vs-lucent (and --prelu-probe), time each side this many times, in turn; the fastest of each counts")
    parser.add_argument(
        "--cross-judge", nargs=4, action="append", default=[], metavar=("MODEL", "SIZE", "LAYER", "CHANNEL"),
        help="with --vs-lucent, also judge both tools' final images by another network (default weights): CHANNEL of LAYER "
        "(mean over positions) on the 8-bit images resized to SIZE, normalized alike; repeatable",
    )
    parser.add_argument("--compile-probe", action="store_true", help="also measure whether torch.compile of the truncated network pays for its compile time")
    parser.add_argument("--compile-modes", default="default", help="comma list of torch.compile modes for --compile-probe (default, max-autotune, max-autotune-no-cudagraphs, reduce-overhead)")
    parser.add_argument("--compile-steps", type=int, default=64, help="steps of each render --compile-probe times")
    parser.add_argument("--overhead", action="store_true", help="only measure fv's own per-step work apart from the model's (a near-free model, 512 directions)")
    parser.add_argument("--no-fold", action="store_true", help="keep BatchNorms unfolded (to measure what folding gains)")
    parser.add_argument("--prelu-probe", action="store_true", help="also render with torch's PReLU backward and with fv's (fvcli.optvis.prelu) in turn, --rounds times: seconds and ratio")
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
    key = layer_key(model, args.layer)
    layout = infer_layout(layer_shapes(model.module, [key], args.size, device)[key])
    unfolded = copy.deepcopy(model.module)  # for Lucent, which would not fold
    probe = torch.rand(2, 3, args.size, args.size, device=device).contiguous(memory_format=torch.channels_last)
    folded = 0 if args.no_fold else fold_batchnorms(model.module, [key], probe)
    units = parse_channel_item(args.channels) if args.channels is not None else list(range(args.units))
    channels = [c for c in units for _ in range(args.repeat)]  # one per image
    settings = RenderSettings(
        model=args.model, weights=args.weights, steps=args.steps, size=args.size, dtype=args.dtype, normalize=normalize_setting(args.normalize)
    )
    normalization = input_normalization(model, settings.normalize)
    canvas = Pipeline.from_setting(settings.transforms).canvas(args.size, args.size)[0]
    input_size = model_input_size(model.module, key, args.size, canvas, device)
    seen = input_size or canvas  # the size of the images the model runs on
    images_count = len(channels)
    batch_size = args.batch_size or (images_count if device.type == "cuda" else min(images_count, 16))
    flops = model_flops_per_image_step(model, key, layout, seen, normalization, device)

    def render_fv() -> tuple[float, torch.Tensor]:
        return run_fv(model, key, layout, channels, settings, device, batch_size, input_size=input_size)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cpu = time.process_time()
    fv_s, fv_images = render_fv()
    fv_cpu_s = time.process_time() - cpu
    image_steps = images_count * args.steps
    achieved = flops * image_steps / fv_s
    peak = PEAK_FLOPS.get(device_name(device))
    result = {
        "config": {
            **{k: v for k, v in vars(args).items() if k != "vs_lucent"},
            "units": len(units), "batch_size": batch_size, "canvas": canvas, "model_input_size": seen, "images": images_count,
            "weights_identity": model.weights, "normalization": normalization,
        },
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
        result["params"] = params_probe(model, key, layout, channels, settings, device, batch_size, lrs, normalization=normalization, input_size=input_size)
    if args.prelu_probe:
        result["prelu_probe"] = prelu_probe(render_fv, max(args.rounds, 1))
    if args.compile_probe:
        modes = [m for m in args.compile_modes.split(",") if m]
        result["compile_probe"] = compile_probe(model, key, min(images_count, batch_size), settings, device, modes, steps=args.compile_steps, input_size=input_size)
    if args.vs_lucent:
        if "@" in key or not key:
            raise SystemExit(f"--vs-lucent: Lucent reads modules' outputs by name; layer {args.layer} is an element of an output")
        lucent_layer = key.replace(".", "_")  # Lucent's names for module paths
        judge = copy.deepcopy(unfolded).float()
        others = load_cross_judges(args.cross_judge, device)

        def lucent_once(batched: bool) -> tuple[float, torch.Tensor]:
            return run_lucent(
                unfolded, lucent_layer, channels, args.steps, args.size, seen, batched=batched, device=device,
                chunk=args.lucent_chunk, normalization=normalization,
            )

        def judge_images(images: torch.Tensor) -> dict[str, list[float]]:
            # Both tools' images, normalized as both tools normalized them for the model.
            judged = {"objective": objective_of_8bit_images(judge, key, layout, channels, images, normalization, device)}
            return {**judged, **cross_judgments(others, images, normalization, device)}

        result.update(versus_lucent(args, render_fv, fv_s, fv_cpu_s, fv_images, lucent_once, judge_images))
    result["commit"], result["date"] = commit(), datetime.date.today().isoformat()
    result["python"], result["torch"] = platform.python_version(), torch.__version__
    print(json.dumps(result))


if __name__ == "__main__":
    main()
