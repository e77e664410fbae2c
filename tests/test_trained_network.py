"""Feature visualizations of a trained network, judged as images.

MTCNN's ONet (48 px) and RNet (24 px), trained face detectors that facenet-pytorch ships in its
wheel, are rendered with every parameterization and method at their defaults (fewer steps than the
default 512, for the CPU suite). An image that only fools the network it was optimized against is
not a feature visualization, so each image of a face is judged by the cascade's other networks,
which were trained apart from it on their own data and sizes (tests/mtcnn.py). The closing numbers
in each test are what its assertions were set from, measured on a 2-core CPU.
"""


import numpy as np
import pytest
from PIL import Image

pytest.importorskip("facenet_pytorch")
pytest.importorskip("skimage")

import fvcli  # noqa: E402
import mtcnn  # noqa: E402

pytestmark = pytest.mark.slow
NETWORKS = {"ONet": mtcnn.ONET, "RNet": mtcnn.RNET}


@pytest.fixture(scope="module")
def judges():
    return mtcnn.networks()


def render(net: str, target: str, steps: int = 32, **options) -> fvcli.Result:
    return fvcli.render(NETWORKS[net], target, size=mtcnn.SIZES[net], steps=steps, normalize=mtcnn.NORMALIZE, progress=False, **options)


def images_of(result) -> list[Image.Image]:
    return [image for unit in result.images for image in (unit if isinstance(unit, list) else [unit])]


def others(net: str) -> list[str]:
    return [name for name in ("ONet", "RNet", "PNet") if name != net]


# Steps for each parameterization at its default learning rate: maco and cppn start slower.
PARAMS = {"fourier": 32, "pixel": 32, "lowres": 32, "laplacian": 32, "maco": 96, "cppn": 96}


@pytest.mark.parametrize("net", NETWORKS)
@pytest.mark.parametrize("param", PARAMS)
def test_every_parameterization_draws_a_face_that_the_other_networks_see(net, param, judges):
    result = render(net, mtcnn.FACE[net], steps=PARAMS[param], param=param)
    said = mtcnn.face_probability(result.images, judges)
    assert said[net][0] > 0.99, said  # the network it was optimized against
    for judge in others(net):  # networks it was not optimized against
        assert said[judge][0] > 0.5, (judge, said)


def test_transparent_faces_are_faces_and_turn_transparent(judges):
    result = render("ONet", mtcnn.FACE["ONet"], steps=48, alpha=True)
    image = result.images[0]
    assert image.mode == "RGBA" and np.asarray(image)[..., 3].mean() / 255 < 0.93  # below its start, 0.95
    said = mtcnn.face_probability([image], judges)  # over grey, as fv measures it
    assert all(said[judge][0] > 0.9 for judge in said), said


def test_diverse_faces_are_each_a_face_and_differ(judges):
    result = render("ONet", mtcnn.FACE["ONet"], diversity=3)
    images = images_of(result)
    said = mtcnn.face_probability(images, judges)
    assert all(p > 0.9 for judge in said for p in said[judge]), said
    pixels = [np.asarray(image, dtype=float) / 255 for image in images]
    assert min(np.abs(a - b).mean() for i, a in enumerate(pixels) for b in pixels[i + 1 :]) > 0.05
    assert result.records[0]["diversity_similarity"] < 0.9


def test_a_face_grows_in_a_photo_without_one(tmp_path, judges):
    """--init: from a part of astronaut.png with no face (the helmet), 128 steps of ONet's face
    objective draw one that RNet and PNet see too (measured: RNet 0.0008 -> 0.10, PNet 0.016 ->
    0.71; at the default 512 steps all three say 1.00)."""
    helmet = mtcnn.astronaut_helmet(tmp_path)
    before = mtcnn.face_probability([Image.open(helmet).resize((48, 48))], judges)
    result = render("ONet", mtcnn.FACE["ONet"], steps=128, init=str(helmet))
    after = mtcnn.face_probability(result.images, judges)
    assert before["ONet"][0] < 0.1 and after["ONet"][0] > 0.99
    assert after["RNet"][0] > 10 * before["RNet"][0] and after["PNet"][0] > 0.5, (before, after)


@pytest.mark.parametrize("method", ["caricature", "inversion"])
def test_a_caricature_and_an_inversion_of_a_face_are_faces(method, tmp_path, judges):
    face = mtcnn.astronaut_face(tmp_path)
    result = render("ONet", f'{method}(prelu4, "{face}")')
    record = result.records[0]
    assert record["activation_final"] > record["activation_start"]  # closer to the photo's activations, or further along them
    said = mtcnn.face_probability(result.images, judges)
    assert all(said[judge][0] > 0.9 for judge in said), said


def test_the_negative_of_the_face_output_is_no_face(judges):
    result = render("ONet", "-" + mtcnn.FACE["ONet"])
    said = mtcnn.face_probability(result.images, judges)
    assert all(said[judge][0] < 0.1 for judge in said), said
