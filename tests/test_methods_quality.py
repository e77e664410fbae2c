"""Every method beyond the article is honest about quality: on the tiny model and on random-weight
GoogLeNet, each raises every unit's objective (an inversion's objective is minus its distance to the
photo, so it rising means the distance fell). 48 steps: maco and transparency start more slowly
than fourier (a standardized spectrum; an opacity plane), and at 24 some of their units have not
risen yet."""

from pathlib import Path

import numpy
import pytest
import torch

import fvcli
from conftest import TINY

# A picture with structure at several scales, as photos have (pixel noise is no photo: the
# transforms' resampling blurs it, and no image matches it through them).
PHOTO = str(Path(__file__).parents[1] / "configs" / "images" / "rings_centre.png")

MODELS = {
    # model, weights, a layer with 4 channels to render, input size
    "tiny": (TINY, "random", "conv3", 48),
    "googlenet": ("googlenet", "random", "mixed4a", 64),
}
METHODS = {
    "maco": ("{layer}:0-3", {"param": "maco"}),  # at their default learning rates
    "cppn": ("{layer}:0-3", {"param": "cppn"}),
    "alpha": ("{layer}:0-3", {"alpha": True}),
    "init": ("{layer}:0-3", {"init": "{photo}"}),
    "negative": ("-{layer}:0-3", {}),
    "caricature": ("caricature({layer}, '{photo}')", {}),
    "inversion": ("inversion({layer}, '{photo}')", {}),
    "dictionary": ("direction({layer}, '{dictionary}')", {}),
}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_every_unit_of_every_method_moves_its_objective_the_right_way(model, method, tmp_path):
    name, weights, layer, size = MODELS[model]
    target, options = METHODS[method]
    options = {key: value.format(photo=PHOTO) if isinstance(value, str) else value for key, value in options.items()}
    channels = next(row["channels"] for row in fvcli.layers(name, layer) if row["name"] == layer or row["alias"] == layer)
    dictionary = tmp_path / "dictionary.npy"  # 4 random directions, one unit each
    numpy.save(dictionary, torch.randn(4, channels, generator=torch.Generator().manual_seed(1)).numpy())
    target = target.format(layer=layer, photo=PHOTO, dictionary=dictionary)
    # Lucid's standard transforms: what these thresholds were measured with (auto picks robust for GoogLeNet, which a random network's small image rises more slowly under).
    result = fvcli.render(name, target, weights=weights, size=size, steps=48, dtype="float32", transforms="standard", **options)
    assert result.records, "no units"
    for record in result.records:
        assert record["status"] != "failed", record
        assert record["activation_final"] > record["activation_start"], (method, model, record)
