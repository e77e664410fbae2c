"""Make configs/images/: small synthetic stand-ins for a dataset, so that specs with an `examples:`
section run offline. Stripes at several angles and frequencies, checkerboards, dots, colour gradients
and rings, in varied colours; mostly PNG, a few JPEG, one in a subfolder. Deterministic:

    python configs/make_images.py

For real dataset examples, point `--images` (or `examples: images:`) at a folder of photographs,
such as an ImageNet validation folder.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image

FOLDER = Path(__file__).parent / "images"
COLOURS = [
    (230, 60, 50), (250, 200, 40), (40, 150, 70), (40, 90, 200), (150, 60, 180),
    (20, 20, 20), (240, 240, 235), (230, 120, 30), (60, 190, 200), (120, 80, 40),
]


def paint(size: tuple[int, int], shade) -> Image.Image:
    """An RGB image whose pixel (x, y) is `shade(x, y)`: a 0..1 mix of two colours, or a colour."""
    width, height = size
    return Image.frombytes("RGB", size, bytes(v for y in range(height) for x in range(width) for v in shade(x, y)))


def mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(round(p + (q - p) * t) for p, q in zip(a, b))


def stripes(angle: float, period: float, a, b, soft: bool):
    dx, dy = math.cos(math.radians(angle)), math.sin(math.radians(angle))

    def shade(x, y):
        phase = (x * dx + y * dy) / period
        t = 0.5 + 0.5 * math.sin(2 * math.pi * phase) if soft else float(phase % 1 < 0.5)
        return mix(a, b, t)

    return shade


def checks(cell: int, a, b):
    return lambda x, y: a if (x // cell + y // cell) % 2 else b


def dots(spacing: int, radius: float, a, b):
    def shade(x, y):
        cx, cy = (x % spacing) - spacing / 2, (y % spacing) - spacing / 2
        return a if cx * cx + cy * cy < radius * radius else b

    return shade


def gradient(angle: float, span: float, a, b):
    dx, dy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return lambda x, y: mix(a, b, min(1.0, max(0.0, (x * dx + y * dy) / span)))


def rings(centre: tuple[float, float], period: float, a, b):
    return lambda x, y: mix(a, b, 0.5 + 0.5 * math.cos(2 * math.pi * math.hypot(x - centre[0], y - centre[1]) / period))


def designs():
    """(file name, size, shade) for every image, in a fixed order."""
    c = COLOURS
    return [
        ("stripes_h_wide.png", (128, 96), stripes(90, 24, c[0], c[6], soft=False)),
        ("stripes_v_fine.png", (96, 96), stripes(0, 6, c[5], c[1], soft=False)),
        ("stripes_45.png", (112, 112), stripes(45, 12, c[3], c[6], soft=False)),
        ("stripes_135_soft.png", (96, 128), stripes(135, 16, c[2], c[1], soft=True)),
        ("stripes_30_soft.jpg", (128, 128), stripes(30, 10, c[4], c[8], soft=True)),
        ("stripes_60.png", (96, 96), stripes(60, 20, c[7], c[5], soft=False)),
        ("checks_small.png", (96, 96), checks(6, c[5], c[6])),
        ("checks_large.png", (128, 96), checks(24, c[0], c[3])),
        ("checks_colour.png", (96, 96), checks(12, c[2], c[4])),
        ("checks_warm.jpg", (112, 112), checks(16, c[1], c[7])),
        ("dots_dense.png", (96, 96), dots(10, 3, c[5], c[1])),
        ("dots_sparse.png", (128, 128), dots(32, 9, c[0], c[6])),
        ("dots_blue.png", (96, 112), dots(16, 5, c[3], c[8])),
        ("gradient_red_blue.png", (96, 96), gradient(0, 96, c[0], c[3])),
        ("gradient_green.png", (96, 96), gradient(90, 96, c[2], c[6])),
        ("gradient_diagonal.jpg", (128, 96), gradient(45, 160, c[1], c[4])),
        ("gradient_dark.png", (96, 96), gradient(135, 136, c[5], c[9])),
        ("rings_centre.png", (112, 112), rings((56, 56), 14, c[0], c[1])),
        ("rings_corner.png", (96, 96), rings((0, 0), 20, c[3], c[6])),
        ("rings_fine.jpg", (96, 96), rings((48, 48), 6, c[5], c[8])),
        ("plain_orange.png", (64, 64), lambda x, y: c[7]),
        ("plain_grey.png", (64, 64), lambda x, y: (128, 128, 128)),
        ("more/stripes_fine_soft.png", (96, 96), stripes(75, 5, c[9], c[6], soft=True)),
        ("more/checks_tiny.png", (96, 96), checks(3, c[4], c[1])),
    ]


def main() -> None:
    for name, size, shade in designs():
        path = FOLDER / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = paint(size, shade)
        if path.suffix == ".jpg":
            image.save(path, format="JPEG", quality=85)
        else:
            image.save(path, format="PNG", optimize=True)
    print(f"wrote {len(designs())} images to {FOLDER}")


if __name__ == "__main__":
    main()
