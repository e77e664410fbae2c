"""Do `fv examples` find faces? The share of faces among each channel's dataset examples, for MTCNN's
ONet and RNet (configs/mtcnn.py) over the labelled pictures of configs/make_faces.py.

    python benchmarks/faces_examples.py                 # both sets, k = 10, 3 channels a layer
    python benchmarks/faces_examples.py --set lfw --all  # LFW only; every channel listed

Two sets: `lfw`, scikit-image's 100 LFW faces and 100 non-faces (50% faces), and `all`, those and
65 crops of its photos (2 faces; 38% faces). Per channel: the share of faces among its top k
examples (the pictures that excite it most) and its bottom k (those that suppress it most). A
face-selective channel has faces at the top and non-faces at the bottom; a face detector's face
output (ONet's dense6_1:1, RNet's dense5_1:1) should be the clearest of all.

A layer's line gives the mean shares over its channels and counts its face-selective channels (top
>= 80% faces and bottom <= 20%), then the same count for the network with random weights (seeds
0, 1, 2; --random 0 leaves them out): the baseline. LFW's non-faces are mostly plain patches, so on
`lfw` even random channels put the contrasted faces at the top; the photo crops of `all` are
textured, and there random channels rarely qualify. Below each line the layer's most face-selective
channels, ranked by top share minus bottom share. Offline: the networks ship in facenet-pytorch's
wheel, the pictures in scikit-image's.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fvcli  # noqa: E402

# (model factory, layers: convolutions from the middle to the last, and the face output). The
# convolutions, not the PReLUs after them: most of ONet's prelu4 slopes (106 of 128) and RNet's prelu3
# slopes (49 of 64) are negative, so there a strongly negative input comes out high, and a PReLU's
# lowest values are those nearest 0, not the most suppressed.
MODELS = {
    "onet": (f"{ROOT}/configs/mtcnn.py:onet", ["conv2", "conv3", "conv4", "dense6_1"]),
    "rnet": (f"{ROOT}/configs/mtcnn.py:rnet", ["conv2", "conv3", "dense5_1"]),
}
SELECTIVE = (0.8, 0.2)  # a face-selective channel: at least this share of faces at the top, at most this at the bottom


def make_faces():
    """configs/make_faces.py, imported from its file (configs/ is no package)."""
    spec = importlib.util.spec_from_file_location("make_faces", ROOT / "configs" / "make_faces.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def is_face(path: str) -> bool:
    """A picture's label, from the folder make_faces.py put it in."""
    return "faces" in path.split("/")[:-1]


def face_share(examples: list[dict]) -> float:
    return sum(is_face(e["path"]) for e in examples) / len(examples)


def shares(model: str, layers: list[str], images: Path, k: int, weights: str = "default", seed: int = 0) -> dict[str, list[tuple[int, float, float]]]:
    """Per layer: (channel, face share of the top k, of the bottom k) for every channel."""
    collected = fvcli.examples(model, *layers, images=images, k=k, crop=16, weights=weights, seed=seed)
    return {
        layer.sidecar["layer"]: [(r["channel"], face_share(r["top"]), face_share(r["bottom"])) for r in layer.records]
        for layer in collected.layers
    }


def selective(rows: list[tuple[int, float, float]]) -> int:
    return sum(top >= SELECTIVE[0] and bottom <= SELECTIVE[1] for _, top, bottom in rows)


def table(name: str, per_layer: dict, baselines: list[dict], show: int | None) -> list[str]:
    lines = []
    for layer, rows in per_layer.items():
        mean_top = sum(top for _, top, _ in rows) / len(rows)
        mean_bottom = sum(bottom for _, _, bottom in rows) / len(rows)
        random = "/".join(str(selective(baseline[layer])) for baseline in baselines) or "-"
        lines.append(
            f"{name:5} {layer:9} {'all ' + str(len(rows)):>8} {mean_top:9.0%} {mean_bottom:12.0%}"
            f"   face-selective: {selective(rows)}; random weights: {random}"
        )
        ranked = sorted(rows, key=lambda row: (row[2] - row[1], row[0]))
        for channel, top, bottom in ranked if show is None else ranked[:show]:
            lines.append(f"{name:5} {layer:9} {channel:8d} {top:9.0%} {bottom:12.0%}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=("lfw", "all", "both"), default="both", help="lfw: 100 faces, 100 non-faces; all: with the photo crops")
    parser.add_argument("--k", type=int, default=10, help="examples kept at each end")
    parser.add_argument("--show", type=int, default=3, help="channels listed per layer, most face-selective first")
    parser.add_argument("--all", action="store_true", help="list every channel")
    parser.add_argument("--random", type=int, default=3, help="random-weight baselines (seeds 0 .. N-1)")
    parser.add_argument("--models", default="onet,rnet", help="comma-separated: onet, rnet")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        make_faces().write(Path(folder))
        for chosen in ("lfw", "all") if args.set == "both" else (args.set,):
            images = Path(folder) / "lfw" if chosen == "lfw" else Path(folder)
            paths = [p.relative_to(images).as_posix() for p in images.rglob("*.png")]
            faces = sum(map(is_face, paths))
            print(f"\nset {chosen}: {len(paths)} pictures, {faces} faces ({faces / len(paths):.0%}); k = {args.k}")
            print(f"{'model':5} {'layer':9} {'channel':>8} {'top faces':>9} {'bottom faces':>12}")
            for name in args.models.split(","):
                model, layers = MODELS[name]
                start = time.perf_counter()
                per_layer = shares(model, layers, images, args.k)
                seconds = time.perf_counter() - start
                baselines = [shares(model, layers, images, args.k, "random", seed) for seed in range(args.random)]
                print("\n".join(table(name, per_layer, baselines, None if args.all else args.show)))
                print(f"({name}: {seconds:.1f} s for the trained network's examples)")


if __name__ == "__main__":
    main()
