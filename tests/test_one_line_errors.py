"""Odd models and damaged files of fv's own are one line, never a traceback (issue 29, class C and
the small things of F): real tiny models (tests/odd_models.py), real files edited as a user or a
bad disk would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, atlas_job, fv, noise_photos

ODD = f"{Path(__file__).parent / 'odd_models.py'}"
TINY_RUN = ["--weights", "random", "--size", "32", "--steps", "4", "-q"]


def one_line(said: str) -> str:
    assert said.count("\n") == 1 and "Traceback" not in said and "Warning" not in said, said
    return said


@pytest.mark.parametrize("model, target, message", [
    ("make_detached", "odd:0", "layer odd is a tensor detached from the image"),
    ("make_bool", "odd:0", "layer odd is a tensor of bool, not of a floating-point type"),
    ("make_int64", "odd:0", "layer odd is a tensor of int64"),
    ("make_complex", "odd:0", "layer odd is a complex-valued tensor"),
    ("make_none", "logit:0", "the model's output gives None, no tensor"),
])
def test_a_layer_fv_cannot_follow_gradients_through_is_one_line_before_rendering(tmp_path, model, target, message):
    """--threads auto timed a step first: a RuntimeError traceback when the machine was busy,
    failed units and exit 1 when idle. A model returning None was told to name one element."""
    said = one_line(fv("render", target, "--model", f"{ODD}:{model}", *TINY_RUN, "--threads", "auto", "--out", str(tmp_path / "o"), code=2))
    assert message in said and "name one element" not in said, said
    assert not (tmp_path / "o").exists()


def test_atlases_of_a_layer_too_wide_for_a_targets_text_and_of_infinite_activations(tmp_path):
    """The stand-in icon's inline vector of 22,000 channels exceeded the grammar's length limit
    (TargetError); activations overflowed to infinity reached UMAP ("Input contains infinity")."""
    photos = noise_photos(tmp_path / "photos", 12)
    atlas = ["--images", str(photos), "--samples", "8", "--grid", "2", "--size", "32", "--steps", "2", "--transforms", "none"]
    said = fv("render", "--activation-atlas", "wide", "--model", f"{ODD}:make_wide", "--weights", "random", *atlas,
              "--dry-run", "--out", str(tmp_path / "wide"))
    assert "activation atlas of" in said and "wide" in said
    said = fv("render", "--activation-atlas", "odd", "--model", f"{ODD}:make_overflow", "--weights", "random", *atlas,
              "--out", str(tmp_path / "inf"), code=1)  # its icons overflow as its samples did: failed units
    assert "samples whose activations are not finite (NaN or infinity)" in said and "activation atlas of" in said, said


def test_the_output_a_class_atlas_cannot_compute_is_named(tmp_path):
    """It said "cannot compute layer  on a 224 px image" (an empty name)."""
    photos = noise_photos(tmp_path / "photos", 4)
    said = one_line(fv("render", "--activation-atlas", "conv", "--model", f"{ODD}:make_fixed_32", "--weights", "random",
                       "--images", str(photos), "--samples", "8", "--grid", "2", "--class-target", "logit:0", "--dry-run", code=2))
    assert "cannot compute its output on a 224 px image" in said, said


def test_a_png_record_that_is_json_but_no_object_is_rendered_again(tmp_path):
    """`[]` or a string as a PNG's fv-unit record: AttributeError on resume and in the stale-file sweep."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    args = ["render", "conv3:0-1", "--model", TINY, *TINY_RUN, "--batch-size", "1", "--out", str(tmp_path)]
    fv(*args)
    folder = tmp_path / "tiny_model.make" / "conv3"
    untimed = lambda: {k: v for k, v in json.loads((folder / "grid.json").read_text()).items() if k != "timing"}  # noqa: E731
    grid = untimed()
    for text in ("[]", '"conv3:0"'):
        info = PngInfo()
        info.add_text("fv-unit", text)
        Image.new("RGB", (32, 32)).save(folder / "conv3_0000.png", pnginfo=info)
        (folder / "grid.json").unlink()
        fv(*args)
        assert untimed() == grid


def damaged_atlas_json(record: dict) -> dict[str, dict]:
    cell = record["cells"][0]
    return {
        "cells as a mapping": {**record, "cells": {"0": cell}},
        "a sample without position": {**record, "cells": [{**cell, "samples": [{"path": "x.png"}]}]},
        "a top channel as a number": {**record, "cells": [{**cell, "top_channels": [3]}]},
        "grid as a list": {**record, "grid": [2, 2]},
        "an icon as a number": {**record, "cells": [{**cell, "icon": 7}]},
    }


def test_a_damaged_atlas_json_is_skipped_in_one_line(atlas_out):
    path = atlas_job(atlas_out) / "atlas.json"
    for what, record in damaged_atlas_json(json.loads(path.read_text())).items():
        path.write_text(json.dumps(record))
        said = fv("atlas", str(atlas_out))
        assert f"{path}: skipped, not an activation atlas fv can read" in said, (what, said)


def test_a_damaged_layout_with_its_digest_is_not_assembled(atlas_out):
    """A loadable atlas-layout.npz, digest intact, edited: IndexError or ValueError in assembly, or
    silently accepted."""
    from fvcli.atlas.activation_image import assemble_folder

    folder = atlas_job(atlas_out)
    path = folder / "atlas-layout.npz"
    with np.load(path) as data:
        good = dict(data)
    n = len(good["image"])
    damaged = {
        "nearest out of range": {"nearest": good["nearest"] + n},
        "files cut": {"files": good["files"][:1], "image": good["image"] * 0 + 3},
        "counts as text": {"counts": good["counts"].astype(str)},
        "a negative box side": {"box_side": np.array(-4)},
        "a negative row": {"cell_rows": good["cell_rows"] - 5},
        "layout not finite": {"layout": good["layout"] * np.inf},
    }
    for what, change in damaged.items():
        np.savez(path, **{**good, **change})
        said = []
        assert assemble_folder(folder, said.append) is None, what
        assert "atlas-layout.npz is missing or damaged" in said[0], (what, said)
    np.savez(path, **{**good, "position": good["position"] + 100})  # off the layer's grid
    said = []
    assert assemble_folder(folder, said.append) is None and "samples off the layer's grid" in said[0], said
    (folder / "grid.json").write_text(json.dumps({**json.loads((folder / "grid.json").read_text()), "settings": {"size": "abc"}}))
    np.savez(path, **good)
    said = []
    assert assemble_folder(folder, said.append) is None and "settings.size is 'abc'" in said[0], said


@pytest.mark.parametrize("size", ["abc", -5, 1e300, 6000])
def test_merge_refuses_a_manifest_whose_sidecar_size_is_not_its_size(tmp_path, size):
    """"abc", -5 or 1e300 were a ValueError or OverflowError later; 6000, a 2.9 GB atlas.png."""
    fv("render", "conv2:0-3", "--model", TINY, *TINY_RUN, "--steps", "1", "--shard", "0/2", "--out", str(tmp_path))
    path = tmp_path / "tiny_model.make" / "conv2" / "grid.shard-0-of-2.json"
    manifest = json.loads(path.read_text())
    manifest["sidecar"]["settings"]["size"] = size
    path.write_text(json.dumps(manifest))
    said = one_line(fv("merge", str(tmp_path), code=2))
    assert "grid.shard-0-of-2.json is damaged ('sidecar.settings.size' is" in said, said


def test_a_cossim_pow_of_minus_zero_is_zero():
    """`cossim_pow=-0.0` was refused (the API writes it as -0), though it is 0."""
    import fvcli
    from fvcli.specs.grammar import parse_target

    assert str(fvcli.direction("conv3", [1, 0], cossim_pow=-0.0)) == "direction(conv3, [1, 0], cossim_pow=0)"
    assert parse_target("direction_neuron(conv3, [1, 0], cossim_pow=-0)").describe() == "direction_neuron(conv3, [1, 0], cossim_pow=0)"
    with pytest.raises(ValueError, match="expected a power from 0 to 10"):
        parse_target("direction(conv3, [1, 0], cossim_pow=-1)")
