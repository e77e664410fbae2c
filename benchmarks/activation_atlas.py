"""The activation atlas of configs/activation-atlas.yaml (MTCNN's ONet, layer conv3, a 20x20 grid,
265 real pictures): the time of each stage and how well the icons stand for their cells.

    python configs/make_faces.py                 # first: configs/faces/
    python benchmarks/activation_atlas.py        # a fresh process runs the config (about 3 minutes on 2 cores)
    python benchmarks/activation_atlas.py --docs  # and writes docs/activation-atlas.png from it

The stages are timed inside the run (atlas.json's timing.seconds): collect (the images through the
model to conv3, 16 positions each), layout (exact neighbours and UMAP, numba's compiling included, as
in any fresh process), render (the icons, fv's runner) and assemble (atlas.png, atlas.json, sample
strips). Then the share of icons whose activation at the centre position is nearer (cosine) to their
own cell's average than to any other kept cell's. Prints a Markdown row for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "configs" / "activation-atlas.yaml"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--docs", action="store_true", help="write docs/activation-atlas.png from the run")
    parser.add_argument("--out", default=None, help="keep the run here (default: a temporary folder)")
    args = parser.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="fv-atlas-bench-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fvcli", "render", args.spec, "--out", str(out), "--device", args.device, "--no-atlas", "-q"],
                   cwd=ROOT, env=env, check=True)
    wall = time.perf_counter() - start
    folder = next(path.parent for path in out.rglob("atlas.json"))
    record = json.loads((folder / "atlas.json").read_text())

    from fvcli.atlas.activation_image import nearest_cell_share
    from fvcli.models.registry import load_model
    from fvcli.optvis.engine import input_normalization

    os.chdir(ROOT)
    loaded = load_model(record["model"]["name"], "default", 0, quiet=True)
    measured = nearest_cell_share(folder, loaded, input_normalization(loaded, "model"), record["layer_module"])
    seconds = record["timing"]["seconds"]
    cells, grid = len(record["cells"]), record["grid"]["rows"]
    print(json.dumps({"seconds": seconds, "wall": round(wall, 1), "cells": cells, "samples": record["samples"], "nearest_own": measured}))
    print(f"| {args.device} | {grid}x{grid} | {record['samples']} | {cells} | {seconds['collect']:.1f} | {seconds['layout']:.1f} | "
          f"{seconds['render']:.1f} | {seconds['assemble']:.1f} | {wall:.0f} | {measured['nearest_own']}/{cells} ({measured['share']:.1%}) |")
    if args.docs:
        from PIL import Image

        with Image.open(folder / "atlas.png") as image:  # a palette of 256 colours: a third of the bytes, the same picture
            image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(ROOT / "docs" / "activation-atlas.png", optimize=True)


if __name__ == "__main__":
    main()
