"""MTCNN's three trained face networks (facenet-pytorch ships their weights in its wheel) as fv
models and as judges, and real photos from scikit-image: what the trained-network tests use.

ONet (48 px), RNet (24 px) and PNet (12 px) were trained together as a cascade, each on its own
data at its own size, so an image optimized against one of them and called a face by the other two
is a face in more than one network's eyes, not an adversarial pattern of the one it was made for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ONET = "facenet_pytorch.models.mtcnn:ONet"
RNET = "facenet_pytorch.models.mtcnn:RNet"
PNET = "facenet_pytorch.models.mtcnn:PNet"
NORMALIZE = "0.5,0.5,0.5/0.502,0.502,0.502"  # their input: (x * 255 - 127.5) / 128
FACE = {"ONet": "dense6_1:1", "RNet": "dense5_1:1"}  # the face logit of each (class 1: face)
SIZES = {"ONet": 48, "RNet": 24, "PNet": 12}


def networks() -> dict[str, torch.nn.Module]:
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    return {"ONet": ONet().eval(), "RNet": RNet().eval(), "PNet": PNet().eval()}


def face_probability(images: list[Image.Image], judges: dict[str, torch.nn.Module]) -> dict[str, list[float]]:
    """Each judge's probability that each image is a face, the image resized (area) to the judge's
    own size; PNet, fully convolutional, gives one answer at 12 px."""
    pixels = torch.stack([torch.from_numpy(np.asarray(over_grey(im), dtype=np.float32) / 255).permute(2, 0, 1) for im in images])
    said = {}
    with torch.no_grad():
        for name, net in judges.items():
            x = F.interpolate(pixels, size=(SIZES[name], SIZES[name]), mode="area")
            probability = net((x * 255 - 127.5) / 128)[-1]
            said[name] = probability.reshape(len(images), 2, -1)[:, 1].mean(dim=1).tolist()
    return said


def over_grey(image: Image.Image) -> Image.Image:
    """RGB as fv measures an --alpha image: over grey 0.5."""
    if image.mode not in ("RGBA", "LA"):
        return image.convert("RGB")
    grey = Image.new("RGBA", image.size, (128, 128, 128, 255))
    grey.alpha_composite(image.convert("RGBA"))
    return grey.convert("RGB")


def skimage_photo(name: str) -> Image.Image:
    import skimage

    return Image.open(Path(skimage.__file__).parent / "data" / name).convert("RGB")


def astronaut_face(folder: Path) -> Path:
    """The astronaut's face (skimage's astronaut.png, 140 px square around it), as a PNG file."""
    path = folder / "astronaut_face.png"
    skimage_photo("astronaut.png").crop((165, 40, 305, 180)).save(path)
    return path


def astronaut_helmet(folder: Path) -> Path:
    """A part of the same photo with no face in it: the helmet on the table."""
    path = folder / "astronaut_helmet.png"
    skimage_photo("astronaut.png").crop((300, 300, 440, 440)).save(path)
    return path
