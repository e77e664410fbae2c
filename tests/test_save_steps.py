"""--save-steps: each image also kept as it was after given steps, listed in the sidecar, resumed whole."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import fv

FAST = ["--weights", "random", "--steps", "6", "--size", "24"]


def test_step_images_are_written_differ_and_are_listed_and_a_missing_one_is_rendered_again(tmp_path, tiny):
    args = ["render", "conv2:0-1", "--model", tiny, *FAST, "--save-steps", "2,4", "--out", str(tmp_path)]
    fv(*args)
    folder = tmp_path / "tiny_model.make" / "conv2"
    names = ["conv2_0000.step2.png", "conv2_0000.step4.png", "conv2_0000.png"]
    pixels = [np.asarray(Image.open(folder / name), dtype=np.int16) for name in names]
    assert all(np.abs(a - b).max() > 0 for i, a in enumerate(pixels) for b in pixels[i + 1:])

    sidecar = json.loads((folder / "grid.json").read_text())
    assert sidecar["settings"]["save_steps"] == [2, 4]
    unit = sidecar["units"][1]
    assert unit["image"] == "conv2_0001.png"
    assert unit["step_images"] == [{"step": 2, "image": "conv2_0001.step2.png"}, {"step": 4, "image": "conv2_0001.step4.png"}]

    (folder / "conv2_0001.step4.png").unlink()  # the final PNG alone is not a finished unit
    output = fv(*args)
    assert "1 unit already rendered with these settings is kept" in output
    assert (folder / "conv2_0001.step4.png").exists()
    again = json.loads((folder / "grid.json").read_text())["units"]  # a batch of 1 now: values round apart
    assert [(u["image"], u["step_images"]) for u in again] == [(u["image"], u["step_images"]) for u in sidecar["units"]]


def test_diversity_images_each_get_their_step_images(tmp_path, tiny):
    fv("render", "conv2:3", "--model", tiny, *FAST, "--diversity", "2", "--save-steps", "3", "--out", str(tmp_path))
    unit = json.loads((tmp_path / "tiny_model.make" / "conv2" / "grid.json").read_text())["units"][0]
    assert [s["image"] for s in unit["step_images"]] == ["conv2_0003_0.step3.png", "conv2_0003_1.step3.png"]
    assert all((tmp_path / "tiny_model.make" / "conv2" / s["image"]).exists() for s in unit["step_images"])


@pytest.mark.parametrize("steps, message", [
    ("4,2", "--save-steps: expected steps in increasing order, such as 64,128,256, got '4,2'"),
    ("2,2", "--save-steps: expected steps in increasing order, such as 64,128,256, got '2,2'"),
    ("0,2", "--save-steps: expected steps in increasing order, such as 64,128,256, got '0,2'"),
    ("2,x", "--save-steps: expected steps in increasing order, such as 64,128,256, got '2,x'"),
    ("2,6", "target conv2:0: --save-steps 2,6: every step must be below --steps (6), and 6 is not"),
])
def test_a_bad_step_list_exits_2_in_one_line(tmp_path, tiny, steps, message):
    output = fv("render", "conv2:0", "--model", tiny, *FAST, "--save-steps", steps, "--out", str(tmp_path), code=2)
    assert output.strip().splitlines() == [f"fv: error: {message}"]
    assert not tmp_path.joinpath("tiny_model.make").exists()


def test_a_spec_job_names_itself_when_its_steps_are_too_late(tmp_path, tiny):
    spec = tmp_path / "run.yaml"
    spec.write_text(f"model: {tiny}\nweights: random\nsteps: 4\njobs:\n  - layer: conv2\n    save_steps: [1, 4]\n")
    output = fv("render", str(spec), "--out", str(tmp_path), code=2)
    assert output.strip() == f"fv: error: {spec}: jobs[0]: --save-steps 1,4: every step must be below --steps (4), and 4 is not"
