"""How fast a unit rises with --alpha: opaque, fv's --alpha (start at opacity 0.95, the penalty
ramped in), and Lucid's notebook recipe (start at 0.5, full penalty from the first step), side by
side on the same units, steps and seeds in one process.

    python benchmarks/alpha_start.py                               # random GoogLeNet mixed4a:0-7, 64 px
    python benchmarks/alpha_start.py --model configs/mtcnn.py:onet --target dense6_1:1 --size 48 --weights default

Prints, per step count, each variant's objective (over grey, as fv records it) per unit, its mean,
the ratio of the opaque mean to it, the units still within 0.05 of where they started, and the
mean opacity.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy  # noqa: E402
import torch  # noqa: E402

import fvcli  # noqa: E402
import fvcli.optvis.param  # noqa: E402
import fvcli.optvis.transparency  # noqa: E402


@contextlib.contextmanager
def notebook_recipe():
    """Lucid's notebook: images start half opaque, and the penalty has its full weight at once."""
    shift, ramped = fvcli.optvis.param._ALPHA_SHIFT, fvcli.optvis.transparency.ramped
    fvcli.optvis.param._ALPHA_SHIFT = 0.0
    fvcli.optvis.transparency.ramped = lambda weight, step, steps: weight
    try:
        yield
    finally:
        fvcli.optvis.param._ALPHA_SHIFT, fvcli.optvis.transparency.ramped = shift, ramped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="googlenet")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--target", default="mixed4a:0-7")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", default="32,64,128")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = {"weights": args.weights, "size": args.size, "dtype": "float32", "progress": False}
    print(f"{args.model} {args.target}, {args.size} px, weights {args.weights}")
    print("| steps | variant | objective per unit | mean | opaque / it | units within 0.05 of their start | mean opacity |")
    print("|---|---|---|---|---|---|---|")
    for steps in (int(s) for s in args.steps.split(",")):
        rows = {}
        rows["opaque"] = fvcli.render(args.model, args.target, steps=steps, **options)
        rows["--alpha (fv)"] = fvcli.render(args.model, args.target, steps=steps, alpha=True, **options)
        with notebook_recipe():
            rows["--alpha, notebook's start and weight"] = fvcli.render(args.model, args.target, steps=steps, alpha=True, **options)
        opaque = sum(r["activation_final"] for r in rows["opaque"].records) / len(rows["opaque"].records)
        for name, result in rows.items():
            finals = [r["activation_final"] for r in result.records]
            stuck = sum(abs(r["activation_final"] - r["activation_start"]) < 0.05 for r in result.records)
            mean = sum(finals) / len(finals)
            opacity = "1" if name == "opaque" else f"{numpy.mean([numpy.asarray(i)[..., -1].mean() / 255 for i in result.images]):.2f}"
            print(f"| {steps} | {name} | {', '.join(f'{v:.2f}' for v in finals)} | {mean:.2f} | {opaque / mean:.1f} | {stuck} of {len(finals)} | {opacity} |")


if __name__ == "__main__":
    main()
