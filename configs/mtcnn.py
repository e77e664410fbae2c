"""MTCNN's trained face detectors, with the preprocessing they were trained with, as fv model factories:

    fv examples dense6_1:1 --model configs/mtcnn.py:onet --images configs/faces
    fv render configs/faces.yaml

The networks and their weights ship inside facenet-pytorch's wheel (`pip install --no-deps
facenet-pytorch`); nothing is downloaded. `facenet_pytorch.models.mtcnn:ONet` alone works too, but
declares no input size, and `fv examples` would feed it 224 px images, which its Linear layers
refuse; here the size travels with the network, as the normalization does.
"""

from __future__ import annotations

# (x * 255 - 127.5) / 128, as facenet-pytorch's detector feeds the networks RGB pixels x in [0, 1].
PREPROCESSING = {"mean": (127.5 / 255,) * 3, "std": (128 / 255,) * 3}


def _mtcnn():
    try:
        from facenet_pytorch.models import mtcnn
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"{error.name} is missing; install MTCNN's networks with "
            "`pip install --no-deps facenet-pytorch==2.6.0 && pip install requests` (its metadata pins an old torch)"
        ) from None
    return mtcnn


def onet():
    """ONet, MTCNN's last stage: 48 px RGB crops; dense6_1 are the face logits (index 1: face)."""
    return _mtcnn().ONet(), {**PREPROCESSING, "size": 48}


def rnet():
    """RNet, MTCNN's middle stage: 24 px RGB crops; dense5_1 are the face logits (index 1: face)."""
    return _mtcnn().RNet(), {**PREPROCESSING, "size": 24}
