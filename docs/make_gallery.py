"""Render the README's gallery: one picture per spec of configs/article/ below, with random weights.
(The README's pictures of maco, cppn, transparency and accentuation come from the commands in
their captions.)

    python docs/make_gallery.py [NAME ...]     (from the repository's folder; a few minutes on a CPU)

Each spec renders with `--weights random` (no downloads; the pictures show what each method does to
an image, not what a trained network sees), at a small size and step count, and its job grids are
set side by side, titled by job, into docs/gallery/NAME.png.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
GALLERY = ROOT / "docs" / "gallery"
# name: (spec, extra options); small enough to render in a minute or two on 2 CPU cores.
SPECS: dict[str, tuple[str, list[str]]] = {
    "negative": ("configs/article/negative.yaml", []),
    "caricature": ("configs/article/caricature.yaml", []),
    "inversion": ("configs/article/inversion.yaml", []),
    "dictionary": ("configs/article/dictionary.yaml", []),
}
QUICK = ["--weights", "random", "--steps", "128", "--size", "96"]
# The photo a method starts from or compares with, shown first.
PHOTOS = {
    "caricature": "configs/images/dots_sparse.png",
    "inversion": "configs/images/rings_centre.png",
}


def render(name: str, spec: str, extra: list[str], out: Path) -> list[tuple[str, Path]]:
    command = [sys.executable, "-m", "fvcli", "render", spec, *QUICK, *extra, "--out", str(out), "-q"]
    subprocess.run(command, cwd=ROOT, check=True)
    return [(grid.parent.name, grid) for grid in sorted(out.rglob("grid.png"))]


def side_by_side(grids: list[tuple[str, Path]]) -> Image.Image:
    images = [(title, Image.open(path).convert("RGB")) for title, path in grids]
    if images[0][0] == "photo":  # at the height of a grid cell
        side = images[-1][1].width
        images[0] = ("photo", images[0][1].resize((min(side, 96), min(side, 96))))
    title_height, gap = 18, 8
    width = sum(image.width for _, image in images) + gap * (len(images) - 1)
    height = max(image.height for _, image in images) + title_height
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    x = 0
    for title, image in images:
        draw.text((x + 4, 3), title, fill=(40, 40, 40))
        sheet.paste(image, (x, title_height))
        x += image.width + gap
    return sheet


def main(names: list[str]) -> None:
    GALLERY.mkdir(parents=True, exist_ok=True)
    for name in names or list(SPECS):
        spec, extra = SPECS[name]
        if not (ROOT / spec).is_file():
            print(f"skip {name}: {spec} is missing", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory() as folder:
            grids = render(name, spec, extra, Path(folder))
            if name in PHOTOS and (ROOT / PHOTOS[name]).is_file():
                grids.insert(0, ("photo", ROOT / PHOTOS[name]))
            side_by_side(grids).save(GALLERY / f"{name}.png", optimize=True)
        print(f"docs/gallery/{name}.png")


if __name__ == "__main__":
    main(sys.argv[1:])
