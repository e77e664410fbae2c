"""Every example spec in configs/ is valid for its model, and the small ones render."""

import json
from pathlib import Path

import pytest

from conftest import fv
from fvcli.runner import Run
from fvcli.settings import RunSettings
from fvcli.spec import load_spec

ROOT = Path(__file__).parent.parent
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
SMALL = 64  # units: specs up to this size also render in the test


def test_there_are_example_specs():
    names = {p.relative_to(ROOT).as_posix() for p in CONFIGS}
    assert {"configs/quick.yaml", "configs/mixed4a.yaml", "configs/article/ladder.yaml"} <= names


@pytest.mark.parametrize("spec", CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_example_spec_is_valid_and_small_ones_render(tmp_path, spec, monkeypatch):
    monkeypatch.chdir(ROOT)  # files in targets (photos, direction files) are relative to the working directory
    cli = {"weights": "random", "steps": 2, "size": 48, "out": str(tmp_path), "quiet": True}
    requests, _ = load_spec(spec, cli)
    run = Run(requests, RunSettings(out=str(tmp_path), quiet=True), say=lambda _: None)  # resolves every name
    if sum(len(job.units) for job in run.jobs) > SMALL:
        return
    fv("render", str(spec), "--weights", "random", "--steps", "2", "--size", "48", "--out", str(tmp_path), "--quiet")
    sidecars = [json.loads(p.read_text()) for p in tmp_path.rglob("grid.json")]
    assert len(sidecars) == len(requests)
    assert all(u["status"] in ("ok", "dead") for s in sidecars for u in s["units"])
