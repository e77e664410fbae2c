"""Render the gallery of docs/methods.md and the README's pictures. `imagenet`: the article's figures
on EfficientNet-Lite0 (configs/imagenet.yaml), the README's first picture, docs/gallery/imagenet.png.
`onet`: every method on a trained network, MTCNN's ONet
(configs/onet-methods.yaml, at fv's defaults), one titled image per job, into docs/gallery/onet.png.
The others: one picture per spec of configs/article/ below, with random weights. (docs/methods.md's
pictures of maco, cppn, transparency and accentuation come from the commands in their captions.)

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


ONET_SPEC = "configs/onet-methods.yaml"
ONET_PHOTOS = {"init": "configs/images/astronaut_helmet.png", "caricature": "configs/images/astronaut_face.png", "inversion": "configs/images/astronaut_face.png"}
ONET_SCALE = 2  # 48 px images shown at 96 px


def onet_gallery(out: Path) -> Image.Image:
    """configs/onet-methods.yaml rendered into `out`, each job's images (after its photo, where it
    starts from or compares with one) at twice their size, titled, in one row."""
    subprocess.run([sys.executable, "-m", "fvcli", "render", ONET_SPEC, "--out", str(out), "-q"], cwd=ROOT, check=True)
    import json

    cells = []
    for job in __import__("yaml").safe_load((ROOT / ONET_SPEC).read_text())["jobs"]:
        name = job["name"]
        if name in ONET_PHOTOS:
            cells.append((f"{name}: photo", Image.open(ROOT / ONET_PHOTOS[name]).convert("RGB").resize((48, 48), Image.LANCZOS)))
        units = json.loads((out / name / "grid.json").read_text())["units"]
        paths = [image["image"] for image in units[0].get("images", [])] or [units[0]["image"]]
        for k, path in enumerate(paths):
            image = Image.open(out / name / path)
            if image.mode == "RGBA":  # --alpha: over the grid's checkerboard
                from fvcli.run.output import CHECKERS

                board = Image.new("RGB", image.size)
                for y in range(0, image.height, 8):
                    for x in range(0, image.width, 8):
                        board.paste(CHECKERS[(x // 8 + y // 8) % 2], (x, y, x + 8, y + 8))
                board = board.convert("RGBA")
                board.alpha_composite(image)
                image = board
            cells.append((name if k == 0 else "", image.convert("RGB")))
        if job.get("alpha_map"):
            mapped = Image.open(out / name / paths[0].replace(".png", "_alpha.png"))
            black = Image.new("RGBA", mapped.size, (0, 0, 0, 255))
            black.alpha_composite(mapped)
            cells.append(("alpha map", black.convert("RGB")))
    side, gap, title, per_row = 48 * ONET_SCALE, 6, 16, 10
    rows = -(-len(cells) // per_row)
    sheet = Image.new("RGB", (per_row * (side + gap) - gap, rows * (side + title + gap) - gap), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (label, image) in enumerate(cells):
        x, y = (k % per_row) * (side + gap), (k // per_row) * (side + title + gap)
        draw.text((x + 2, y + 2), label, fill=(40, 40, 40))
        sheet.paste(image.resize((side, side), Image.NEAREST), (x, y + title))
    return sheet


IMAGENET_SPEC = "configs/imagenet.yaml"
# Rows of the README's first picture: (title, [(job, units or None for all)]), from configs/imagenet.yaml.
IMAGENET_ROWS = (
    ("channels from early to late blocks: edges, textures, patterns, parts, objects",
     [("early-blocks.1", [0, 1]), ("textures-blocks.3", [0, 1]), ("patterns-blocks.6", [0, 1]), ("parts-blocks.10", [0, 1]), ("objects-blocks.14", [0, 1])]),
    ("class logits", [("classes", None)]),
    ("diversity (4 flamingos)  |  channels of blocks.10 and their negative images", [("diversity", None), ("positive", [0, 1, 2]), ("negative", [0, 1, 2])]),
    ("interpolation, blocks.10:0 to :2  |  a neuron (centre) and its channel", [("interpolation", None), ("neuron", [0, 1]), ("positive", [0, 1])]),
)


def imagenet_gallery(out: Path) -> Image.Image:
    """configs/imagenet.yaml rendered into `out` (a second run only lays out the sheet), its jobs'
    images in titled rows, each image labelled as its grid labels it, and below them the top
    dataset examples of blocks.10's channel 0 among scikit-image's photos."""
    import json

    subprocess.run([sys.executable, "-m", "fvcli", "render", IMAGENET_SPEC, "--out", str(out), "-q"], cwd=ROOT, check=True)
    side, gap, label_height, title_height = 112, 4, 14, 18
    rows = []
    for title, jobs in IMAGENET_ROWS:
        cells = []
        for job, wanted in jobs:
            units = json.loads((out / job / "grid.json").read_text())["units"]
            for index, unit in enumerate(units):
                if wanted is not None and index not in wanted:
                    continue
                images = [i["image"] for i in unit.get("images", [])] or [unit["image"]]
                for k, path in enumerate(images):
                    if job == "classes":
                        label = unit["label"]
                    elif len(images) > 1:  # diversity's images, interpolation's frames
                        label = f"{'frame' if job == 'interpolation' else unit['label'].split()[-1]} {k + 1}"
                    elif job in ("negative", "neuron", "positive"):
                        label = f"{job} {unit['label']}"
                    else:
                        label = f"{job.split('-')[-1]}:{unit['label']}"
                    cells.append((label, Image.open(out / job / path).convert("RGB")))
        rows.append((title, cells))
    strip = Image.open(out / "parts-blocks.10" / "examples" / "0000.png").convert("RGB")
    width = max(len(cells) for _, cells in rows) * (side + gap) - gap
    strip = strip.resize((width, round(strip.height * width / strip.width)))
    height = sum(title_height + label_height + side + gap for _ in rows) + title_height + strip.height
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = 0
    for title, cells in rows:
        draw.text((2, y + 3), title, fill=(20, 20, 20))
        y += title_height
        for k, (label, image) in enumerate(cells):
            x = k * (side + gap)
            draw.text((x + 2, y + 1), label[:18], fill=(90, 90, 90))
            sheet.paste(image.resize((side, side), Image.LANCZOS), (x, y + label_height))
        y += label_height + side + gap
    draw.text((2, y + 3), "dataset examples: the photo crops that excite blocks.10:0 most", fill=(20, 20, 20))
    sheet.paste(strip, (0, y + title_height))
    return sheet


def main(names: list[str]) -> None:
    GALLERY.mkdir(parents=True, exist_ok=True)
    if "imagenet" in names:  # the README's first picture, from configs/imagenet.yaml
        imagenet_gallery(ROOT / "outputs" / "imagenet").save(GALLERY / "imagenet.png", optimize=True)
        print("docs/gallery/imagenet.png")
        names = [name for name in names if name != "imagenet"]
        if not names:
            return
    if not names or "onet" in names:  # into the spec's own out: a second run only lays out the sheet
        onet_gallery(ROOT / "outputs" / "onet-methods").save(GALLERY / "onet.png", optimize=True)
        print("docs/gallery/onet.png")
        names = [name for name in names if name != "onet"]
        if not names and len(sys.argv) > 1:
            return
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
