"""Photos that images start from (`--init`), read as the engine needs them.

A photo is read like a dataset image (dataset_examples.load_image: turned upright, its shorter side
resized to the render size, the centred square cut out), as luma for grayscale models (BT.601, as
dataset examples are). Its file's SHA-256 goes into each unit's hash and the sidecar, so a changed
photo renders again and a moved one does not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from fvcli.dataset_examples import LUMA, load_image
from fvcli.errors import FvError


@dataclass(frozen=True)
class Photo:
    path: str
    sha256: str
    pixels: Tensor  # (channels, size, size) in [0, 1]


def load_photo(path: str, size: int, channels: int) -> Photo:
    """The photo at `path` as a (channels, size, size) image; FvError naming --init and the file
    when it cannot be read as an image, or when the model's images are neither RGB nor grayscale."""
    if channels not in (1, 3):
        raise FvError(f"--init {path}: a photo has RGB colours, but the model takes images of {channels} channels; --init needs an RGB or grayscale model")
    try:
        data = Path(path).read_bytes()
        rgb = load_image(Path(path), size)
    except Exception as error:  # whatever the decoder says: one line
        reason = str(error).replace(path, "").strip(" :'\"") or type(error).__name__
        raise FvError(f"--init {path}: cannot read it as an image ({reason[:200]})") from None
    if channels == 1:
        rgb = sum(weight * plane for weight, plane in zip(LUMA, rgb)).unsqueeze(0)
    return Photo(path, hashlib.sha256(data).hexdigest(), rgb)
