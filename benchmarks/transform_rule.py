"""What sizing the transforms by the network, not by --size, does: three networks, each rendered
small with the transforms of the rule before (Lucid's standard amounts scaled by --size / 128) and
of the rule now (`--transforms auto`: amounts for the network's declared input; robust for a
network of ImageNet scale).

    python benchmarks/transform_rule.py            # a few minutes on 2 cores

- MTCNN's ONet (declares 48 px) at 48 px: the rule keeps its amounts (pad 5, jitter 3 and 2); the
  face logit reached, and the face probability RNet and PNet give the image.
- GoogLeNet (declares 224 px), random weights, at 48 px: mixed4a channels 0-7, objective reached.
- EfficientNet-Lite0 (declares 224 px) at 64 px: 16 class logits spread over the labels, judged by
  Lite1 and Lite2 (top-1, top-5) as in benchmarks/transfer.py.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import fvcli  # noqa: E402
from fvcli.optvis.transforms import STANDARD, STANDARD_SIZE, sized  # noqa: E402


def before(size: int) -> str:
    """The standard transforms as the rule before sized them for a `size` px image, as items."""
    items = []
    for t in sized(STANDARD, min(1.0, size / STANDARD_SIZE)):
        name = type(t).__name__.lower()
        value = t.pixels if hasattr(t, "pixels") else "/".join(f"{v:g}" for v in (t.factors if name == "scale" else t.degrees))
        items.append(f"{name}={value}")
    return ",".join(items)


def mean(values) -> float:
    return statistics.mean(values)


def onet() -> None:
    import mtcnn

    judges = mtcnn.networks()
    for label, transforms in (("before", before(48)), ("now (auto)", "auto")):
        result = fvcli.render(mtcnn.ONET, mtcnn.FACE["ONet"], size=48, steps=128, normalize=mtcnn.NORMALIZE, transforms=transforms, progress=False)
        said = mtcnn.face_probability(result.images, judges)
        print(f"| ONet 48 px, face logit | {label} | {result.records[0]['activation_final']:.2f} | RNet {said['RNet'][0]:.3f}, PNet {said['PNet'][0]:.3f} |")


def googlenet() -> None:
    for label, transforms in (("before", before(48)), ("now (auto)", "auto")):
        result = fvcli.render("googlenet", "mixed4a:0-7", weights="random", size=48, steps=128, transforms=transforms, progress=False)
        print(f"| GoogLeNet (random) 48 px, mixed4a:0-7 | {label} | {mean(r['activation_final'] for r in result.records):.3f} | |")


def lite0() -> None:
    from transfer import Judge, scores, spread_classes, to_tensor

    classes = spread_classes(16)
    judges = [Judge(name, "cpu") for name in ("efficientnet_lite1", "efficientnet_lite2")]
    for label, transforms in (("before", before(64)), ("now (auto)", "auto")):
        result = fvcli.render("efficientnet_lite0", "output:" + ",".join(map(str, classes)), size=64, steps=128, transforms=transforms, progress=False)
        images = to_tensor(result.images)
        said = [scores(judge.probabilities(images), classes) for judge in judges]
        hits = ", ".join(f"{name} top-1 {sum(s['top1'])}/16, top-5 {sum(s['top5'])}/16" for name, s in zip(("Lite1", "Lite2"), said))
        print(f"| Lite0 64 px, 16 class logits | {label} | {mean(r['activation_final'] for r in result.records):.2f} | {hits} |")


def main() -> None:
    torch.set_num_threads(2)
    print("| network, size, units | transforms | objective reached (mean) | judges |")
    print("|---|---|---|---|")
    onet()
    googlenet()
    lite0()


if __name__ == "__main__":
    main()
