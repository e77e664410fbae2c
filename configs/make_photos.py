"""Make configs/photos/: real photographs that ship offline, for dataset examples of an ImageNet
network. scikit-image carries a handful of photos (a cat, a coffee cup, an astronaut, a rocket,
motorcycles, a horse, coins, bricks, grass, gravel, the Hubble deep field, a retina, ...); each is
written whole and as a 3 x 3 grid of overlapping crops, so that a channel's top examples can be
parts of a picture (an eye, a wheel, a cup's rim), 180 images in all. Deterministic:

    python configs/make_photos.py          # needs scikit-image (pip install scikit-image)
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

FOLDER = Path(__file__).parent / "photos"
# The photographs among scikit-image's data files (not its drawings, scans and test patterns).
PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "clock_motion.png", "coffee.png", "coins.png",
    "grass.png", "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
    "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg", "cell.png",
)
SIDE = 224  # each picture and crop is saved at most this large
CROPS = 3  # a CROPS x CROPS grid of crops, each half the picture's side


def crops(image: Image.Image) -> list[Image.Image]:
    width, height = image.size
    side = min(width, height) // 2
    out = []
    for row in range(CROPS):
        for column in range(CROPS):
            left = round(column * (width - side) / (CROPS - 1))
            top = round(row * (height - side) / (CROPS - 1))
            out.append(image.crop((left, top, left + side, top + side)))
    return out


def write(folder: Path = FOLDER) -> int:
    """Write the photos and their crops into `folder`; how many were written."""
    import skimage

    data = Path(skimage.__file__).parent / "data"
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for name in PHOTOS:
        path = data / name
        if not path.is_file():
            continue
        image = Image.open(path)
        if image.mode == "RGBA":  # the horse is a silhouette on transparency: put it on white
            white = Image.new("RGB", image.size, "white")
            white.paste(image, mask=image.getchannel("A"))
            image = white
        image = image.convert("RGB")
        stem = Path(name).stem
        for index, picture in enumerate([image, *crops(image)]):
            picture.thumbnail((SIDE, SIDE))
            picture.save(folder / (f"{stem}.png" if index == 0 else f"{stem}_crop{index}.png"))
            written += 1
    return written


def main() -> int:
    try:
        import skimage  # noqa: F401
    except ImportError:
        print("make_photos.py needs scikit-image: pip install scikit-image", file=sys.stderr)
        return 2
    print(f"wrote {write()} photos and crops to {FOLDER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
