"""Do other networks recognize fv's class images? The transfer benchmark (MaCo's transferability).

Renders the class logits of `--classes` ImageNet classes spread evenly over the label set (0, 20,
40, ... for 50) on EfficientNet-Lite0, with every seed of `--seeds`, by each method: fv's
parameterizations at its defaults, and Lucent (render_vis: its standard transforms, a decorrelated
Fourier image, Adam 0.05) at the same steps and size. Lucent upsamples images under 224 px to 224
before the model; fv feeds the model what the network declares (fvcli.optvis.transforms explains
the rule), so for a fair comparison both feed the model one scale: by default Lucent's model sees
the side fv's model sees (`--lucent-side 224`: Lucent's own upsampling).

Each final 8-bit image (the PNG fv writes; Lucent's image rounded the same way) is judged by
Lite1 and Lite2, networks not optimized against, each at its own input size: top-1 and top-5 hits,
the probability of the class, and a control, the mean probability the image gives the other
rendered classes. Lite0 judges too (the objective reached: its p on the 8-bit image). The three
judges are one family (EfficientNet-Lite, one training recipe): transfer within a family is
easier than across families, so these numbers partly measure that.

    python benchmarks/transfer.py                       # 50 classes x 3 seeds, 128 px, 128 steps
    python benchmarks/transfer.py --methods fourier,lucent --seeds 0 --classes 16
    python benchmarks/transfer.py --fv transforms=none --label no-transforms --methods fourier

Writes outputs/transfer/results.json (every image's scores; a run adds its seeds to the same
method's earlier ones), a contact sheet per method and seed, and prints the Markdown table
BENCHMARKS.md carries (`--table`: of every method stored).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fvcli  # noqa: E402
from fvcli.models.registry import imagenet_categories, load_model  # noqa: E402

PARAMS = ("fourier", "pixel", "lowres", "laplacian", "maco", "cppn")
MODEL = "efficientnet_lite0"
JUDGES = ("efficientnet_lite1", "efficientnet_lite2")


def spread_classes(count: int) -> list[int]:
    """`count` ImageNet classes evenly spread over the 1000 labels: 0, 1000/count, ..."""
    return [round(i * 1000 / count) for i in range(count)]


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """8-bit PIL images -> (N, 3, H, W) float in [0, 1]."""
    arrays = [torch.frombuffer(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8).view(im.height, im.width, 3) for im in images]
    return torch.stack(arrays).permute(0, 3, 1, 2).float() / 255


def render_fv(method: str, classes: list[int], seed: int, args, options: dict) -> tuple[float, torch.Tensor]:
    target = f"output:{','.join(str(c) for c in classes)}"
    started = time.perf_counter()
    result = fvcli.render(args.fv_model, target, param=method, seed=seed, steps=args.steps, size=args.size, device=args.device, **options)
    seconds = time.perf_counter() - started
    if result.exit_code != 0:
        raise SystemExit(f"fv render exited {result.exit_code} for {method}, seed {seed}")
    return seconds, to_tensor(result.images)


def render_lucent(model, classes: list[int], seed: int, args, model_side: int) -> tuple[float, torch.Tensor]:
    """Lucent's render_vis, batched: one image per class, each with its logit as the objective;
    Lucent's ImageNet preprocessing replaced by the model's (x*255 - 127)/128."""
    import copy

    sys.path.insert(0, str(ROOT / "benchmarks" / ".lucent"))
    from lucent.optvis import objectives, param, render, transform

    mean = torch.tensor(model.normalization[0]).view(1, 3, 1, 1).to(args.device)
    std = torch.tensor(model.normalization[1]).view(1, 3, 1, 1).to(args.device)
    transforms = [*transform.standard_transforms, lambda x: (x - mean) / std]
    network = copy.deepcopy(model.module).to(args.device)  # Lucent never removes its hooks
    objective = sum(objectives.channel("fc", c, batch=i) for i, c in enumerate(classes))
    side = args.lucent_side or model_side
    torch.manual_seed(seed)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        final = render.render_vis(
            network, objective, lambda: param.image(args.size, batch=len(classes)), transforms=transforms,
            thresholds=(args.steps,), preprocess=False, show_image=False, progress=False, fixed_image_size=side,
        )[-1]
    seconds = time.perf_counter() - started
    images = torch.from_numpy(final).permute(0, 3, 1, 2).float()
    return seconds, (images.clamp(0, 1) * 255).round() / 255  # as 8 bits, as fv's PNGs


class Judge:
    def __init__(self, name: str, device: str):
        self.model = load_model(name, "default", 0, quiet=True)
        self.model.module.to(device)
        self.name, self.side, self.device = name, self.model.native_size, device
        self.mean, self.std = (torch.tensor(v).view(1, 3, 1, 1) for v in self.model.normalization)

    def probabilities(self, images: torch.Tensor, side: int | None = None) -> torch.Tensor:
        side = side or self.side
        x = F.interpolate(images, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        with torch.no_grad():
            return self.model.module(((x - self.mean) / self.std).to(self.device)).softmax(1).cpu()


def scores(p: torch.Tensor, classes: list[int]) -> dict:
    """Per image i (of class classes[i]): top-1, top-5, p(class), and the control, the mean p of
    the other rendered classes."""
    index = torch.tensor(classes)
    own = p[torch.arange(len(classes)), index]
    others = (p[:, index].sum(1) - own) / max(len(classes) - 1, 1)
    top5 = p.topk(5, dim=1).indices
    return {
        "top1": (top5[:, 0] == index).tolist(),
        "top5": (top5 == index[:, None]).any(1).tolist(),
        "p": own.tolist(),
        "control_p": others.tolist(),
    }


def sheet(images: torch.Tensor, path: Path, columns: int = 10) -> None:
    n, _, h, w = images.shape
    rows = (n + columns - 1) // columns
    canvas = Image.new("RGB", (columns * w, rows * h), "white")
    for i in range(n):
        pixels = (images[i].permute(1, 2, 0) * 255).round().clamp(0, 255).byte().numpy()
        canvas.paste(Image.fromarray(pixels), ((i % columns) * w, (i // columns) * h))
    canvas.save(path)


def summary(rows: list[dict]) -> dict:
    """Mean over seeds and the range of the per-seed values, for each measure."""
    out = {}
    for judge in JUDGES:
        for measure in ("top1", "top5", "p", "control_p"):
            per_seed = [statistics.mean(r["judges"][judge][measure]) * (100 if measure.startswith("top") else 1) for r in rows]
            out[f"{judge}.{measure}"] = (statistics.mean(per_seed), min(per_seed), max(per_seed))
    out["reached_p"] = statistics.mean(statistics.mean(r["judges"][MODEL]["p"]) for r in rows)
    out["seconds"] = statistics.mean(r["seconds"] for r in rows)
    return out


def table(results: dict[str, list[dict]]) -> str:
    lines = [
        "| method | Lite1 top-1 % | Lite1 top-5 % | Lite1 p | Lite2 top-1 % | Lite2 top-5 % | Lite2 p | control p (L1/L2) | Lite0 p (reached) | s per seed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, rows in results.items():
        s = summary(rows)
        cell = lambda key, digits=1: f"{s[key][0]:.{digits}f} ({s[key][1]:.{digits}f}-{s[key][2]:.{digits}f})"  # noqa: E731
        lines.append(
            f"| {label} | {cell(JUDGES[0] + '.top1')} | {cell(JUDGES[0] + '.top5')} | {s[JUDGES[0] + '.p'][0]:.3f} | "
            f"{cell(JUDGES[1] + '.top1')} | {cell(JUDGES[1] + '.top5')} | {s[JUDGES[1] + '.p'][0]:.3f} | "
            f"{s[JUDGES[0] + '.control_p'][0]:.4f}/{s[JUDGES[1] + '.control_p'][0]:.4f} | {s['reached_p']:.3f} | {s['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=50, help="classes spread over the 1000 labels (default 50)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds, comma-separated (default 0,1,2)")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--methods", default=",".join([*PARAMS, "lucent"]), help="fv parameterizations and/or lucent")
    parser.add_argument("--fv", action="append", default=[], metavar="OPTION=VALUE", help="an fv render option for every fv method (repeatable)")
    parser.add_argument("--fv-model", default=MODEL, help="what fv renders (a factory wrapping Lite0, say); judged as Lite0's images")
    parser.add_argument("--label", default="", help="a suffix for fv's rows, naming what --fv changed")
    parser.add_argument("--lucent-side", type=int, default=None, help="the side Lucent's model sees (default: the side fv's model sees; 224: Lucent's own upsampling)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on a CPU")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "transfer")
    parser.add_argument("--table", action="store_true", help="only print the table of every method stored in OUT/results.json")
    args = parser.parse_args()
    if args.table:
        print(stored_table(args.out))
        return
    torch.set_num_threads(args.threads)

    options = {}
    for item in args.fv:
        key, _, value = item.partition("=")
        options[key.replace("-", "_")] = value
    classes = spread_classes(args.classes)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = imagenet_categories()
    judges = [Judge(name, args.device) for name in (MODEL, *JUDGES)]
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "results.json"
    stored = json.loads(results_file.read_text()) if results_file.exists() else {}
    print(f"{len(classes)} classes: {', '.join(names[c] for c in classes[:8])}, ...", file=sys.stderr)

    results: dict[str, list[dict]] = {}
    for method in args.methods.split(","):
        label = method if method == "lucent" else f"fv {method}" + (f" {args.label}" if args.label else "")
        rows = []
        for seed in seeds:
            if method == "lucent":
                side = fvcli.render(MODEL, "output:0", steps=1, size=args.size, device=args.device).records[0]
                side = side.get("model_input_size") or args.size
                seconds, images = render_lucent(judges[0].model, classes, seed, args, side)
            else:
                seconds, images = render_fv(method, classes, seed, args, options)
            row = {"seed": seed, "seconds": round(seconds, 1), "judges": {}}
            for judge in judges:
                side = images.shape[-1] if judge.name == MODEL else None  # Lite0: the image as rendered
                row["judges"][judge.name] = scores(judge.probabilities(images, side), classes)
            rows.append(row)
            sheet(images, args.out / f"{label.replace(' ', '-')}-seed{seed}.png")
            hits = [sum(row["judges"][j]["top1"]) for j in JUDGES]
            print(f"{label} seed {seed}: {seconds:.0f} s, top-1 hits Lite1 {hits[0]}/{len(classes)}, Lite2 {hits[1]}/{len(classes)}", file=sys.stderr)
        setup = {"classes": classes, "steps": args.steps, "size": args.size, "options": options}
        earlier = stored.get(label)
        if earlier is not None and {k: earlier.get(k) for k in setup} == setup:  # other seeds of the same rows
            rows = sorted([*(r for r in earlier["rows"] if r["seed"] not in seeds), *rows], key=lambda r: r["seed"])
        results[label] = rows
        stored[label] = {**setup, "rows": rows}
        results_file.write_text(json.dumps(stored, indent=1))
    print(table(results))


def stored_table(out: Path) -> str:
    """The table of every method in OUT/results.json, each with all the seeds run so far."""
    stored = json.loads((out / "results.json").read_text())
    return table({label: entry["rows"] for label, entry in stored.items()})


if __name__ == "__main__":
    main()
