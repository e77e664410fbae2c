"""Dataset examples on real data: MTCNN's trained ONet and RNet (configs/mtcnn.py; weights inside
facenet-pytorch's wheel) over scikit-image's 100 LFW faces and 100 non-faces, and crops of its photos
(configs/make_faces.py).
A face detector's face output ranks faces at the top and non-faces at the bottom, and so do some of
its convolution channels, where those of the same network with random weights do not; configs/
faces.yaml is valid. benchmarks/faces_examples.py measured what these tests assert, with a margin."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from conftest import fv

pytest.importorskip("facenet_pytorch")
pytest.importorskip("skimage")

ROOT = Path(__file__).parent.parent
ONET = f"{ROOT}/configs/mtcnn.py:onet"
RNET = f"{ROOT}/configs/mtcnn.py:rnet"
K = 10


def make_faces():
    """configs/make_faces.py as a module (configs/ is no package)."""
    spec = importlib.util.spec_from_file_location("make_faces", ROOT / "configs" / "make_faces.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """The labelled pictures, made once for this file, in a folder named as configs/faces.yaml expects."""
    return make_faces().write(tmp_path_factory.mktemp("set") / "faces")


def face_share(examples: list[dict]) -> float:
    """The share of faces among examples, from the folder each picture is in (faces/ or nonfaces/)."""
    return sum("faces" in e["path"].split("/")[:-1] for e in examples) / len(examples)


def collect(model: str, layers: list[str], images: Path, out: Path, *options: str) -> dict[str, dict[int, tuple[float, float]]]:
    """`fv examples` of every channel of `layers`; per layer and channel, the face share of the top k
    and of the bottom k."""
    fv("examples", *layers, "--model", model, "--images", str(images), "--k", str(K), "--crop", "16", "--out", str(out), "--quiet", *options)
    shares = {}
    for path in out.rglob("examples.json"):
        data = json.loads(path.read_text())
        assert data["images"]["seen"] == len(list(images.rglob("*.png"))) and data["images"]["skipped"] == 0
        assert all((path.parent / u["strip"]).is_file() and (path.parent / u["negative_strip"]).is_file() for u in data["units"])
        shares[data["layer"]] = {u["channel"]: (face_share(u["top"]), face_share(u["bottom"])) for u in data["units"]}
    return shares


def selective(shares: dict[int, tuple[float, float]]) -> list[int]:
    """The face-selective channels: at least 90% faces at the top, at most 10% at the bottom."""
    return [channel for channel, (top, bottom) in shares.items() if top >= 0.9 and bottom <= 0.1]


def test_the_set_is_labelled_by_folder(faces):
    lfw = sorted(p.relative_to(faces).as_posix() for p in (faces / "lfw").rglob("*.png"))
    assert len(lfw) == 200 and sum("/faces/" in p for p in lfw) == 100
    photos = sorted(p.name for p in (faces / "photos" / "faces").iterdir())
    assert photos == ["astronaut_0.png", "camera_0.png"]
    assert len(list((faces / "photos" / "nonfaces").iterdir())) == 63
    from PIL import Image

    with Image.open(faces / "lfw" / "faces" / "000.png") as picture:
        assert picture.size == (48, 48) and picture.mode == "RGB"


def test_onet_face_output_ranks_faces_first_and_non_faces_last(faces, tmp_path):
    """Over LFW's 100 faces and 100 non-faces; measured: 100% faces at the top, 0% at the bottom."""
    shares = collect(ONET, ["dense6_1"], faces / "lfw", tmp_path)["dense6_1"]
    top, bottom = shares[1]
    assert top >= 0.9 and bottom <= 0.1, (top, bottom)
    top, bottom = shares[0]  # the non-face logit: the other way round
    assert top <= 0.1 and bottom >= 0.9, (top, bottom)


def test_onet_convolutions_have_face_selective_channels_random_weights_do_not(faces, tmp_path):
    """Over the whole set: on LFW alone even random channels put faces first, for their contrast
    (its non-faces are mostly plain patches), but the photo crops are textured non-faces. Measured
    at k = 10: conv3 has 5 face-selective channels, conv4 16; with random weights (seed 0) none."""
    trained = collect(ONET, ["conv3", "conv4"], faces, tmp_path / "trained")
    random = collect(ONET, ["conv3", "conv4"], faces, tmp_path / "random", "--weights", "random")
    assert len(selective(trained["conv3"])) >= 3 and len(selective(trained["conv4"])) >= 8, trained
    assert len(selective(random["conv3"])) + len(selective(random["conv4"])) <= 1, random


def test_rnet_face_output_ranks_faces_first(faces, tmp_path):
    top, bottom = collect(RNET, ["dense5_1:1"], faces / "lfw", tmp_path)["dense5_1"][1]
    assert top >= 0.9 and bottom <= 0.1, (top, bottom)


def test_faces_spec_is_valid(faces, tmp_path, monkeypatch):
    """configs/faces.yaml, beside a made set as configs/faces/ would be; run from the repository's
    root, which its model path is relative to."""
    spec = faces.parent / "faces.yaml"
    shutil.copy(ROOT / "configs" / "faces.yaml", spec)
    monkeypatch.chdir(ROOT)
    output = fv("render", str(spec), "--dry-run", "--out", str(tmp_path))
    assert "conv3" in output and "conv4" in output and "neg_dense6_1" in output
    assert output.count("of 265 images") == 3  # the examples of conv3, conv4 and dense6_1
    assert not any(tmp_path.iterdir())
