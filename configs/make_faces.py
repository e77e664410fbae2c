"""Make configs/faces/: a small labelled set of real pictures, offline, from the data that ships inside
scikit-image's wheel, for dataset examples of a face detector (configs/faces.yaml):

    python configs/make_faces.py            # configs/faces/ (git-ignored: made again in a second)
    python configs/make_faces.py DIR        # anywhere else

- `lfw/faces/`, `lfw/nonfaces/`: scikit-image's `lfw_subset.npy`, 200 grey 25 x 25 crops of Labeled
  Faces in the Wild (the first 100 are faces, the last 100 non-faces), upscaled (bicubic) to 48 px,
  the input size of MTCNN's ONet, and saved as RGB with the grey repeated in each channel.
- `photos/faces/`, `photos/nonfaces/`: 48 px crops of scikit-image's photos. The two faces among them
  (the astronaut's, the cameraman's) are cut from the squares scikit-image's LBP frontal-face cascade
  finds (`skimage.feature.Cascade`; the boxes are written below, so that making the set takes no
  detection); every other crop is a tile of a grid over the photo shrunk to 144 px on its shorter
  side, and tiles that touch a face's square are left out, so no half face counts as a non-face.

A picture's label is the folder it is in (`faces` or `nonfaces`), so the paths in a job's
examples.json say which examples are faces. Deterministic; the files are the same at every run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

FOLDER = Path(__file__).parent / "faces"
SIZE = 48  # px: MTCNN ONet's input
LFW_FACES = 100  # lfw_subset.npy: faces first, then as many non-faces
TILE_SIDE = 144  # px: the photos' shorter side before tiling (3 tiles of SIZE)
# Photo file -> the face squares in it, (row, column, side) in the photo's pixels, as
# Cascade(lbp_frontal_face_cascade_filename()).detect_multi_scale(...) finds them.
PHOTOS = {
    "astronaut.png": [(74, 178, 87)],
    "camera.png": [(120, 205, 67)],
    "chelsea.png": [],  # a cat: not a human face
    "coffee.png": [],
    "rocket.jpg": [],
    "motorcycle_left.png": [],
}


def skimage_data() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def lfw_pictures(data: Path) -> list[tuple[str, Image.Image]]:
    """(path below the folder, picture) for the 200 LFW crops, upscaled to SIZE, RGB."""
    crops = np.load(data / "lfw_subset.npy")
    pictures = []
    for index, crop in enumerate(crops):
        grey = Image.fromarray(np.round(crop * 255).astype(np.uint8), mode="L")
        label = "faces" if index < LFW_FACES else "nonfaces"
        pictures.append((f"lfw/{label}/{index:03d}.png", grey.resize((SIZE, SIZE), Image.Resampling.BICUBIC).convert("RGB")))
    return pictures


def photo_pictures(data: Path) -> list[tuple[str, Image.Image]]:
    """(path below the folder, picture) for the face squares and the grid tiles of each photo."""
    pictures = []
    for name, faces in PHOTOS.items():
        photo = Image.open(data / name).convert("RGB")
        stem = Path(name).stem
        for number, (row, column, side) in enumerate(faces):
            face = photo.crop((column, row, column + side, row + side)).resize((SIZE, SIZE), Image.Resampling.LANCZOS)
            pictures.append((f"photos/faces/{stem}_{number}.png", face))
        scale = TILE_SIDE / min(photo.size)
        small = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.LANCZOS)
        rows, columns = small.height // SIZE, small.width // SIZE
        top, left = (small.height - rows * SIZE) // 2, (small.width - columns * SIZE) // 2
        for r in range(rows):
            for c in range(columns):
                box = (left + c * SIZE, top + r * SIZE, left + (c + 1) * SIZE, top + (r + 1) * SIZE)
                if any(_overlap(box, face, scale) for face in faces):
                    continue
                pictures.append((f"photos/nonfaces/{stem}_{r}_{c}.png", small.crop(box)))
    return pictures


def _overlap(box: tuple[int, int, int, int], face: tuple[int, int, int], scale: float) -> bool:
    """Whether a tile (left, top, right, bottom, in the shrunk photo) touches a face square."""
    row, column, side = (v * scale for v in face)
    left, top, right, bottom = box
    return left < column + side and column < right and top < row + side and row < bottom


def pictures() -> list[tuple[str, Image.Image]]:
    """Every picture of the set, (path below the folder, picture), in a fixed order."""
    data = skimage_data()
    return lfw_pictures(data) + photo_pictures(data)


def write(folder: Path = FOLDER) -> Path:
    """Write the set into `folder` (made if missing; files of the same names are replaced)."""
    made = pictures()
    for relative, picture in made:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path, format="PNG")
    faces = sum("/faces/" in relative for relative, _ in made)
    print(f"wrote {len(made)} pictures ({faces} faces, {len(made) - faces} non-faces) to {folder}")
    return folder


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER)
