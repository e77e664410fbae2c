"""Activation atlases (fvcli.atlas.activation_atlas): on the tiny model and on MTCNN's trained ONet,
from real photos (scikit-image's, through configs/make_faces.py). No mocks: real models, real files,
real subprocesses for kill -9.

The measure of an atlas (the issue's): each icon's activation at the layer's centre position is
closer (cosine) to its own cell's average than to any other kept cell's, for at least 90% of cells.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, fv
from test_faces import faces  # noqa: F401  (the fixture: configs/faces/ made in a temporary folder)

ROOT = Path(__file__).parent.parent
ONET = f"{ROOT / 'configs' / 'mtcnn.py'}:onet"
SMALL_TRANSFORMS = "pad=2,jitter=2,scale=0.9/0.95/1/1.05/1.1,rotate=-10/0/10,jitter=2"  # configs/activation-atlas.yaml's
# The tiny model with random weights, on the photo tiles: an atlas in a few seconds. Its random
# features are not robust to transforms at 32 px, so its icons render without them.
TINY_ATLAS = ["--activation-atlas", "conv3", "--model", TINY, "--weights", "random", "--samples", "16", "--grid", "6",
              "--size", "32", "--transforms", "none"]
# Batches of one icon, where files are compared byte for byte across processes (a unit's float
# arithmetic then never depends on its batch; see test_shards) and a run is killed between icons.
ONE_BY_ONE = ["--batch-size", "1"]


def share(folder: Path, model: str, weights: str, layer: str) -> dict:
    from fvcli.atlas.activation_image import nearest_cell_share
    from fvcli.models.registry import load_model
    from fvcli.optvis.engine import input_normalization

    loaded = load_model(model, weights, 0, quiet=True)
    return nearest_cell_share(folder, loaded, input_normalization(loaded, "model"), layer)


def without_timing(path: Path) -> dict:
    record = json.loads(path.read_text())
    record.pop("timing")
    return record


@pytest.mark.slow
def test_tiny_model_atlas_icons_are_nearest_their_own_cells(faces, tmp_path):  # noqa: F811
    fv("render", *TINY_ATLAS, "--images", str(faces / "photos"), "--steps", "128", "--out", str(tmp_path), "-q")
    folder = tmp_path / "tiny_model.make" / "atlas-conv3"
    record = json.loads((folder / "atlas.json").read_text())
    cells = record["cells"]
    assert record["samples"] == 65 * 16 and len(cells) >= 6
    assert {"row", "column", "count", "top_channels", "samples", "objective"} <= set(cells[0])
    assert all(cell["count"] >= 3 and 0 <= cell["row"] < 6 and 0 <= cell["column"] < 6 for cell in cells)
    assert all(sample["path"].startswith(("faces/", "nonfaces/")) and len(sample["position"]) == 2 for sample in cells[0]["samples"])
    assert len({(cell["row"], cell["column"]) for cell in cells}) == len(cells)
    from PIL import Image

    with Image.open(folder / "atlas.png") as image:
        assert image.size == (6 * 32, 6 * 32)
    measured = share(folder, TINY, "random", "conv3")
    assert measured["share"] >= 0.9, measured


@pytest.mark.slow
def test_onet_atlas_icons_are_nearest_their_own_cells(faces, tmp_path):  # noqa: F811
    """The trained network on real photos, at the config's settings on a smaller grid."""
    fv("render", "--activation-atlas", "conv3", "--model", ONET, "--weights", "default", "--images", str(faces),
       "--samples", "16", "--grid", "8", "--size", "48", "--steps", "128", "--lr", "0.03", "--transforms", SMALL_TRANSFORMS,
       "--out", str(tmp_path), "-q")
    folder = tmp_path / "mtcnn.onet" / "atlas-conv3"
    measured = share(folder, ONET, "default", "conv3")
    assert measured["share"] >= 0.9, measured


def test_the_same_seed_gives_the_same_layout_and_another_seed_another(faces):  # noqa: F811
    from fvcli.atlas.activation_layout import umap_layout

    rng = np.random.default_rng(0)
    acts = np.abs(rng.normal(size=(300, 12))).astype(np.float32)
    first, again, other = umap_layout(acts, 20, 0.01, 0), umap_layout(acts, 20, 0.01, 0), umap_layout(acts, 20, 0.01, 1)
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)
    assert first.min() == 0 and first.max() == 1


def test_two_runs_compute_the_same_layout_and_a_rerun_reuses_it(faces, tmp_path):  # noqa: F811
    images = str(faces / "photos")
    for out in ("a", "b"):
        fv("render", *TINY_ATLAS, "--images", images, "--steps", "2", "--out", str(tmp_path / out), "-q")
    layouts = [np.load(tmp_path / out / "tiny_model.make" / "atlas-conv3" / "atlas-layout.npz") for out in ("a", "b")]
    for key in ("layout", "image", "position", "averages", "counts"):
        assert np.array_equal(layouts[0][key], layouts[1][key]), key
    said = fv("render", *TINY_ATLAS, "--images", images, "--steps", "2", "--out", str(tmp_path / "a"))
    assert "layout of 1040 samples" in said and "already computed" in said and "laying out" not in said


@pytest.mark.slow
def test_a_run_killed_mid_render_and_resumed_gives_the_same_atlas(faces, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    args = [*TINY_ATLAS, *ONE_BY_ONE, "--images", str(faces / "photos"), "--steps", "40", "--out", str(out)]
    fv("render", *args, "-q")
    folder = out / "tiny_model.make" / "atlas-conv3"
    whole = (folder / "atlas.png").read_bytes()
    record = without_timing(folder / "atlas.json")
    for path in [*folder.glob("unit_*.png"), folder / "grid.png", folder / "grid.json", folder / "atlas.png", folder / "atlas.json"]:
        path.unlink()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "fvcli", "render", *args, "-q"], env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    while len(list(folder.glob("unit_*.png"))) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list(folder.glob("unit_*.png")))
    assert 2 <= done < len(record["cells"]) and not (folder / "atlas.png").exists()
    subprocess.run([sys.executable, "-m", "fvcli", "render", *args, "-q"], env=env, cwd=ROOT, check=True)
    assert (folder / "atlas.png").read_bytes() == whole
    assert without_timing(folder / "atlas.json") == record


def test_a_second_run_into_a_busy_atlas_is_refused_before_it_collects(faces, tmp_path):  # noqa: F811
    """The layout is made under the job folder's lock: a second run does not compute it too."""
    out = tmp_path / "out"
    args = [*TINY_ATLAS, "--images", str(faces / "photos"), "--steps", "100000", "--out", str(out)]
    lock = out / "tiny_model.make" / "atlas-conv3" / ".fv-lock"
    first = subprocess.Popen([sys.executable, "-m", "fvcli", "render", *args], env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text().strip()) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        said = fv("render", *args, code=2)  # without -q: it would say it collects or lays out
        assert f"another fv run (PID {first.pid}) is writing" in said and said.count("\n") == 1, said
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.wait()


def test_sigterm_while_laying_out_says_so_and_leaves_no_lock(faces, tmp_path):  # noqa: F811
    """SIGTERM where no render loop listens (collecting, laying out) ended fv without a word."""
    folder = tmp_path / "tiny_model.make" / "atlas-conv3"
    args = [*TINY_ATLAS, "--images", str(faces / "photos"), "--out", str(tmp_path), "-q"]
    run = subprocess.Popen([sys.executable, "-m", "fvcli", "render", *args], env={**os.environ, "PYTHONPATH": str(ROOT)},
                           cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (folder / ".fv-lock.layout").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)
    _, said = run.communicate(timeout=60)
    assert run.returncode == 143 and "fv: stopped by SIGTERM" in said and "Traceback" not in said, said
    assert not list(folder.glob(".fv-lock*"))


def test_shards_and_merge_give_the_same_atlas(faces, tmp_path, monkeypatch):  # noqa: F811
    """Two shards that never see each other's icons (as on two machines, gathered afterwards, one
    given --out as an absolute path, one relative): fv merge assembles the grid and then the atlas.
    The shard that sees the other's icons assembles it itself."""
    args = [*TINY_ATLAS, *ONE_BY_ONE, "--images", str(faces / "photos"), "--steps", "16", "--out", str(tmp_path)]
    fv("render", *args, "-q")
    folder = tmp_path / "tiny_model.make" / "atlas-conv3"
    whole, record = (folder / "atlas.png").read_bytes(), without_timing(folder / "atlas.json")

    def clear() -> None:
        for path in [*folder.glob("unit_*.png"), *folder.glob("grid*"), folder / "atlas.png", folder / "atlas.json"]:
            path.unlink()

    clear()
    fv("render", *args, "--shard", "0/2", "-q")
    assert not (folder / "atlas.png").exists()
    fv("render", *args, "--shard", "1/2", "-q")  # it completes the icons: it assembles the atlas
    assert (folder / "atlas.png").read_bytes() == whole
    clear()
    fv("render", *args, "--shard", "0/2", "-q")
    aside = tmp_path / "aside"
    aside.mkdir()
    for path in [*folder.glob("unit_*.png"), *folder.glob("grid.shard-*")]:
        path.rename(aside / path.name)
    monkeypatch.chdir(tmp_path.parent)
    fv("render", *args[:-1], tmp_path.name, "--shard", "1/2", "-q")
    for path in aside.iterdir():
        path.rename(folder / path.name)
    assert not (folder / "atlas.png").exists()
    said = fv("merge", str(tmp_path))
    assert "activation atlas of" in said
    assert (folder / "atlas.png").read_bytes() == whole
    assert without_timing(folder / "atlas.json") == record


def test_class_atlas_keeps_the_samples_that_speak_for_faces(faces, tmp_path):  # noqa: F811
    fv("render", "--activation-atlas", "conv3", "--model", ONET, "--weights", "default", "--images", str(faces / "lfw"),
       "--samples", "8", "--grid", "4", "--class-target", "dense6_1:1", "--class-share", "0.25", "--size", "48", "--steps", "1",
       "--out", str(tmp_path), "-q")
    layout = np.load(tmp_path / "mtcnn.onet" / "atlas-conv3" / "atlas-layout.npz")
    files = [str(f) for f in layout["files"]]
    from_faces = np.mean([files[i].startswith("faces/") for i in layout["image"]])
    assert len(layout["image"]) <= 200 * 8 // 4 and (layout["attribution"] > 0).all()
    assert from_faces > 0.6, from_faces  # 0.69 measured; of all samples half are from faces


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--grid", "0"], "--grid: expected a number of cells a side from 1 to 100"),
        (["--grid", "10000"], "(at most 100)"),
        (["--grid", "50"], "too few samples for a 50x50 grid"),
        (["--samples", "65"], "has 64 positions (8x8); at most 64"),
        (["--activation-atlas", "conv33"], "unknown layer 'conv33'"),
        (["--class-target", "dense6_1:7"], "channel 7 is out of range"),
        # The icons' render options, checked before the samples are collected and laid out:
        (["--diversity", "2", "--diversity-layer", "conv9"], "--diversity-layer: unknown layer 'conv9'"),
        (["--param", "maco", "--spectrum", "missing.pt"], "--spectrum missing.pt: file not found"),
        (["--class-target", "conv2:0"], "class_target conv2:0: not computed from layer conv3"),  # before it
        (["--n-neighbors", "1"], "--n-neighbors: expected an integer from 2 to 1000"),  # UMAP's traceback
        (["--class-share", "0.5"], "set class_target too"),
        (["--min-count", "100000"], "lower --grid or --min-count"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_anything_is_collected(faces, tmp_path, extra, message):  # noqa: F811
    said = fv("render", "--activation-atlas", "conv3", "--model", ONET, "--weights", "default", "--images", str(faces / "lfw"),
              "--out", str(tmp_path), *extra, code=2)
    assert message in said and said.count("\n") == 1, said
    assert not list(tmp_path.rglob("atlas-layout.npz"))


def test_an_atlas_of_one_cell_is_assembled(faces, tmp_path):  # noqa: F811
    """One cell, one direction: its icon is the job's one unit (unit.png, no row number)."""
    fv("render", *TINY_ATLAS, "--grid", "1", "--images", str(faces / "photos"), "--steps", "4", "--out", str(tmp_path), "-q")
    folder = tmp_path / "tiny_model.make" / "atlas-conv3"
    record = json.loads((folder / "atlas.json").read_text())
    assert len(record["cells"]) == 1 and record["cells"][0]["icon"] == "unit.png" and (folder / "atlas.png").is_file()


def test_the_layout_does_not_depend_on_the_batch_size(faces, tmp_path):  # noqa: F811
    """--batch-size is the icons': collected in batches of another size, the activations differed
    by ~1e-6 and UMAP made another layout of them under the same digest."""
    for batch in ("1", "64"):
        fv("render", *TINY_ATLAS, "--batch-size", batch, "--images", str(faces / "photos"), "--steps", "1",
           "--out", str(tmp_path / batch), "-q")
    first, second = (np.load(tmp_path / b / "tiny_model.make" / "atlas-conv3" / "atlas-layout.npz") for b in ("1", "64"))
    assert np.array_equal(first["layout"], second["layout"]) and np.array_equal(first["directions"], second["directions"])


def test_damaged_layout_or_settings_are_said_and_laid_out_again(faces, tmp_path):  # noqa: F811
    """A cut atlas-layout.npz (a BadZipFile) was a traceback in fv render and fv merge; a missing one
    left fv merge silent; an edited grid in atlas-settings.json dropped icons outside it."""
    args = [*TINY_ATLAS, "--images", str(faces / "photos"), "--steps", "4", "--out", str(tmp_path), "-q"]
    fv("render", *args)
    folder = tmp_path / "tiny_model.make" / "atlas-conv3"
    whole, layout = (folder / "atlas.png").read_bytes(), (folder / "atlas-layout.npz").read_bytes()
    cells = np.load(folder / "atlas-layout.npz")["directions"]
    (folder / "atlas-layout.npz").write_bytes(layout[: len(layout) // 2])
    said = fv("render", *args[:-1])  # laid out again, the same, and the icons kept
    assert "laying out" in said and "units already rendered with these settings are kept" in said, said
    assert np.array_equal(np.load(folder / "atlas-layout.npz")["directions"], cells) and (folder / "atlas.png").read_bytes() == whole
    settings = json.loads((folder / "atlas-settings.json").read_text())
    (folder / "atlas-settings.json").write_text(json.dumps({**settings, "grid": 1}))
    (folder / "atlas.png").unlink()
    from fvcli.atlas.activation_image import assemble_folder

    said = []
    assert assemble_folder(folder, said.append) is None and not (folder / "atlas.png").exists()
    assert "atlas-settings.json is missing or damaged (grid 1, cells up to row and column" in said[0]
    # The sample images, gone (as if moved): their crops are blank, and it is said.
    (folder / "atlas-settings.json").write_text(json.dumps({**settings, "images": str(tmp_path / "moved")}))
    said.clear()
    assert assemble_folder(folder, said.append) is not None
    assert any("sample images in" in line and "could not be read" in line for line in said), said
    (folder / "atlas-layout.npz").unlink()
    said.clear()
    assert assemble_folder(folder, said.append) is None and "atlas-layout.npz is missing or damaged; run the same fv render again" in said[0]


def test_folders_without_readable_images_are_refused(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(30):
        (broken / f"{i}.png").write_bytes(b"not a png")
    said = fv("render", *TINY_ATLAS, "--images", str(broken), "--out", str(tmp_path / "out"), code=2)
    assert "none of the 30 image files" in said and said.count("\n") == 1
    said = fv("render", *TINY_ATLAS, "--grid", "20", "--images", str(broken), "--out", str(tmp_path / "out"), code=2)
    assert "none of the 30 image files" in said, said  # not "too few samples"
    (tmp_path / "empty").mkdir()
    said = fv("render", *TINY_ATLAS, "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), code=2)
    assert "no images in" in said
    said = fv("render", "conv3:0", "--grid", "5", "--model", TINY, code=2)
    assert "--grid is an activation atlas option" in said


def test_the_config_and_a_spec_job_are_valid(faces, tmp_path, monkeypatch):  # noqa: F811
    spec = tmp_path / "atlas.yaml"
    text = (ROOT / "configs" / "activation-atlas.yaml").read_text().replace("images: faces", f"images: {faces}")
    spec.write_text(text)
    said = fv("render", str(spec), "--dry-run", "--out", str(tmp_path / "out"))
    assert "activation atlas of configs/mtcnn.py:onet conv3: 16 samples from each of 265 images" in said
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("    grid: 20", "    grid: 20\n    channels: 0-3"))
    assert "an activation atlas names its 'layer:'" in fv("render", str(bad), code=2)
    bad.write_text(text.replace("kind: activation_atlas", "kind: activation-atlas"))
    assert "did you mean activation_atlas?" in fv("render", str(bad), code=2)


def test_direction_cossim_pow_parses_prints_and_scores():
    import torch

    from fvcli.optvis.objectives import Direction, batch_values
    from fvcli.specs.expressions import direction_neuron
    from fvcli.specs.grammar import parse_target

    text = "direction_neuron(conv3, 'cells.npy', cossim_pow=4)[0-3]"
    assert parse_target(text).describe() == text
    assert str(direction_neuron("conv3", [1, 0], cossim_pow=2)) == "direction_neuron(conv3, [1, 0], cossim_pow=2)"
    with pytest.raises(ValueError, match="power from 0 to 10"):
        parse_target("direction(conv3, [1, 0], cossim_pow=11)")
    a = {"L": torch.tensor([[3.0, 4.0], [4.0, -3.0]])}
    plain = Direction("L", torch.tensor([1.0, 0.0]), "d")
    cos = Direction("L", torch.tensor([1.0, 0.0]), "d", cossim_pow=2)
    assert torch.allclose(plain(a), torch.tensor([3.0, 4.0]))
    assert torch.allclose(cos(a), torch.tensor([3.0 * 0.6**2, 4.0 * 0.8**2]), atol=1e-5)
    batch = [Direction("L", torch.tensor([1.0, 0.0]), "d", cossim_pow=2), Direction("L", torch.tensor([0.0, 1.0]), "e", cossim_pow=2)]
    assert torch.allclose(batch_values(batch, a), torch.tensor([3.0 * 0.6**2, -3.0 * 0.1**2]), atol=1e-5)


def test_the_python_api_returns_the_atlas_as_data(faces):  # noqa: F811
    import fvcli

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_model import make

    atlas = fvcli.activation_atlas(make(), "conv3", faces / "photos", grid=6, samples=16, steps=8, size=32, transforms="none", weights="random")
    assert atlas.layout.shape == (1040, 2) and len(atlas.samples["image"]) == 1040
    assert len(atlas.icons) == len(atlas.cells) and len(atlas.cells[0]["vector"]) == 12
    assert atlas.image.size == (192, 192) and atlas.out is None
    assert repr(atlas).startswith("Atlas(conv3, 6x6 grid")


def test_the_atlas_page_of_a_damaged_atlas_json_is_removed_not_left_stale(faces, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    fv("render", *TINY_ATLAS, "--images", str(faces / "photos"), "--steps", "2", "--out", str(out), "--atlas", "-q")
    folder = out / "tiny_model.make" / "atlas-conv3"
    assert (folder / "atlas.html").is_file()
    (folder / "atlas.json").write_text("[" * 100_000 + "]" * 100_000)
    said = fv("atlas", str(out))
    assert "skipped, not an activation atlas fv can read (nested too deeply)" in said and "1 removed" in said
    assert not (folder / "atlas.html").exists() and "atlas.html" not in (folder / "index.html").read_text()

