"""Objectives seeded by files: caricatures and inversions of a photo, and many directions from one
file (a dictionary of K directions renders K units), on the tiny model and on GoogLeNet."""

import hashlib
import json
from pathlib import Path

import numpy
import pytest
import torch
from PIL import Image

import fvcli
from conftest import QUICK, TINY, fv
from fvcli.specs.requests import JobRequest
from fvcli.models.registry import load_model
from fvcli.optvis.objectives import Caricature, Inversion, batch_plan
from fvcli.run.output import read_record
from fvcli.run.runner import Run
from fvcli.specs.settings import RenderSettings, RunSettings
from fvcli.specs.grammar import parse_target
from tiny_model import make

TINY_QUICK = ["--model", TINY, "--weights", "random", "--steps", "12", "--size", "32", "--transforms", "none"]
CHANNELS = 12  # of the tiny model's conv3


@pytest.fixture
def photo(tmp_path):
    """A small picture, wider than tall: red disc on a blue and yellow ground."""
    image = Image.new("RGB", (60, 40), (40, 90, 200))
    pixels = image.load()
    for y in range(40):
        for x in range(60):
            if x > 30:
                pixels[x, y] = (250, 200, 40)
            if (x - 30) ** 2 + (y - 20) ** 2 < 100:
                pixels[x, y] = (230, 60, 50)
    path = tmp_path / "photo.png"
    image.save(path)
    return path


def render(tmp_path, *targets, extra=()):
    """`fv render` of the targets on the tiny model: their sidecars, by target text."""
    out = tmp_path / "out"
    fv("render", *TINY_QUICK, *extra, "--out", str(out), "--quiet", "--", *targets)
    sidecars = [json.loads(p.read_text()) for p in out.rglob("grid.json")]
    return {s["objective"].removeprefix("target: ").split(", maximized")[0]: s for s in sidecars}


# ---- caricature and inversion ----


def test_caricatures_raise_their_objective_and_inversions_lower_their_distance(tmp_path, photo):
    targets = [
        f"caricature(conv2, '{photo}')",
        f"caricature(conv3, '{photo}')",
        f"caricature(conv3, '{photo}', cossim_pow=2)",
        f"inversion(conv2, '{photo}')",
        f"inversion(conv3, '{photo}') - 0.1*conv3:0",
    ]
    sidecars = render(tmp_path, *targets)
    assert sorted(sidecars) == sorted(targets)  # each describes itself as written
    for target, sidecar in sidecars.items():
        [unit] = sidecar["units"]
        assert unit["status"] == "ok" and unit["objective"] == target
        # Maximized: a caricature's match rises; an inversion's value is minus its distance.
        assert unit["activation_final"] > unit["activation_start"], unit
        assert sidecar["files"] == [{"path": str(photo), "sha256": hashlib.sha256(photo.read_bytes()).hexdigest()}]


def test_the_objective_compares_with_the_photos_own_activations(tmp_path, photo):
    """The photo is read as the model sees images (shorter side to --size, centre square, the
    weights' normalization) and run to the layer once; checked against a forward pass by hand."""
    size = 48
    target = parse_target(f"caricature(mixed4a, '{photo}') + inversion(mixed3a, '{photo}')")
    settings = RenderSettings(weights="random", size=size)
    run = Run([JobRequest(target, settings, str(tmp_path))], RunSettings(out=str(tmp_path), quiet=True), say=lambda _: None)
    [unit] = run.jobs[0].units
    caricature, inversion = (o for _, o in unit.objectives[0].terms())
    assert isinstance(caricature, Caricature) and isinstance(inversion, Inversion)

    # By hand: 60 x 40 -> 72 x 48, the centre 48 x 48 square; ImageNet's mean and std; GoogLeNet's
    # inception4a (mixed4a) and inception3a (mixed3a).
    resized = Image.open(photo).convert("RGB").resize((72, 48), Image.Resampling.BILINEAR).crop((12, 0, 60, 48))
    x = torch.from_numpy(numpy.asarray(resized, dtype=numpy.float32) / 255).permute(2, 0, 1)[None]
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    model = load_model("googlenet", "random", 0, quiet=True).module
    seen = {}
    hooks = [getattr(model, name).register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, o)) for name in ("inception3a", "inception4a")]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(caricature.target, seen["inception4a"][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(inversion.target, seen["inception3a"][0], rtol=1e-4, atol=1e-4)

    # And the values are the published formulas on those activations.
    a = torch.randn(2, *caricature.target.shape)
    t = caricature.target
    torch.testing.assert_close(caricature({"inception4a": a}), (a * t).flatten(1).sum(1) / t.pow(2).sum())
    torch.testing.assert_close(inversion({"inception3a": inversion.target[None]}), torch.zeros(1))


def test_the_formulas_on_known_activations():
    t = torch.tensor([[[1.0, 0.0], [2.0, 0.0]], [[0.0, 2.0], [0.0, 0.0]]])  # (C=2, 2, 2), |t|^2 = 9
    side = torch.tensor([[[0.0, 3.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])  # orthogonal to t, |side| = 3
    acts = {"l": torch.stack([t, 2 * t, t + side])}
    plain = Caricature("l", t, "c", None)
    squared = Caricature("l", t, "c", None, cossim_pow=2)
    # dot / |t|^2: the photo's own activations score 1, twice them 2; an orthogonal part adds nothing...
    torch.testing.assert_close(plain(acts), torch.tensor([1.0, 2.0, 1.0]))
    # ... unless the cosine counts: cos(t, t + side) = 3 / sqrt(18).
    torch.testing.assert_close(squared(acts), torch.tensor([1.0, 2.0, 0.5]), atol=1e-5, rtol=1e-5)
    # -|a - t|^2 / |t|^2
    torch.testing.assert_close(Inversion("l", t, "i", None)(acts), torch.tensor([0.0, -1.0, -1.0]))
    # A larger grid (the transforms' padded canvas) is compared on its centre positions.
    padded = torch.zeros(1, 2, 4, 4)
    padded[:, :, 1:3, 1:3] = t
    assert Inversion("l", t, "i", None)({"l": padded}).item() == 0.0


def test_caricature_in_a_spec_and_from_the_python_api(tmp_path, photo):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"model: {TINY}\nweights: random\nsteps: 8\nsize: 32\ntransforms: none\n"
        f"jobs:\n  - name: portrait\n    target: caricature(conv3, '{photo}')\n"
    )
    fv("render", str(spec), "--out", str(tmp_path / "out"), "--quiet")
    sidecar = json.loads((tmp_path / "out" / "portrait" / "grid.json").read_text())
    assert sidecar["units"][0]["objective"] == f"caricature(conv3, '{photo}')"

    result = fvcli.render(make(), f"inversion(conv2, '{photo}')", steps=8, size=32, transforms="none")
    [record] = result.records
    assert record["activation_final"] > record["activation_start"]
    assert result.sidecar["files"][0]["path"] == str(photo)


def test_a_changed_photo_or_direction_file_renders_again(tmp_path, photo):
    dictionary = tmp_path / "dirs.npy"
    numpy.save(dictionary, numpy.eye(3, CHANNELS, dtype=numpy.float32))
    targets = [f"caricature(conv3, '{photo}')", f"direction(conv3, '{dictionary}')"]
    out = tmp_path / "out"
    command = ["render", *TINY_QUICK, "--out", str(out), "--", *targets]
    fv(*command)
    cari = next(out.rglob("caricature*/unit.png"))
    rows = sorted(next(out.rglob("direction*")).glob("unit_*.png"))
    before = read_record(cari)["hash"], [read_record(p)["hash"] for p in rows]
    assert "4 units already rendered" in fv(*command)  # unchanged files: kept

    Image.open(photo).rotate(90).save(photo)
    numpy.save(dictionary, numpy.eye(3, CHANNELS, k=1, dtype=numpy.float32))
    output = fv(*command)
    assert "already rendered" not in output
    after = read_record(cari)["hash"], [read_record(p)["hash"] for p in rows]
    assert after[0] != before[0] and all(a != b for a, b in zip(after[1], before[1]))
    sidecar = json.loads((cari.parent / "grid.json").read_text())
    assert sidecar["files"][0]["sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()


def _one_line_error(tmp_path, target, *options):
    output = fv("render", *TINY_QUICK, *options, "--out", str(tmp_path / "out"), "--", target, code=2)
    assert output.count("\n") == 1 and output.startswith("fv: error: "), output
    assert not (tmp_path / "out").exists()
    return output.strip()


def test_bad_photos_fail_in_one_line_naming_the_file_and_the_target(tmp_path, photo, monkeypatch):
    monkeypatch.chdir(tmp_path)  # photo paths are relative to the working directory
    (tmp_path / "notes.jpg").write_text("not a picture")
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "broken.png").write_bytes(photo.read_bytes()[:60])
    assert _one_line_error(tmp_path, "caricature(conv3, 'missing.jpg')") == (
        "fv: error: target caricature(conv3, 'missing.jpg'): photo missing.jpg not found (expected an image file such as a JPEG or PNG)"
    )
    assert _one_line_error(tmp_path, "inversion(conv3, 'notes.jpg')") == (
        "fv: error: target inversion(conv3, 'notes.jpg'): photo notes.jpg: not an image file fv can read"
    )
    assert _one_line_error(tmp_path, "caricature(conv3, 'folder.jpg')").startswith(
        "fv: error: target caricature(conv3, 'folder.jpg'): photo folder.jpg is not a file"
    )
    assert _one_line_error(tmp_path, "2*caricature(conv3, 'broken.png')").startswith(
        "fv: error: target 2*caricature(conv3, 'broken.png'): photo broken.png: "
    )
    assert _one_line_error(tmp_path, "caricature(conv3, photo.png)") == (
        "fv: error: target: expected the photo's file name in quotes, such as caricature(conv3, 'photo.jpg') "
        "at column 19 of 'caricature(conv3, photo.png)'"
    )
    assert _one_line_error(tmp_path, "caricature(conv3, 'photo.png', cossim_pow=-1)").startswith(
        "fv: error: target: expected a power from 0 to 10 at column"
    )
    assert _one_line_error(tmp_path, "caricature(nolayer, 'photo.png')").startswith(
        "fv: error: target caricature(nolayer, 'photo.png'): unknown layer 'nolayer'"
    )


def test_a_photo_path_is_relative_to_the_working_directory(tmp_path, photo, monkeypatch):
    monkeypatch.chdir(photo.parent)
    sidecars = render(tmp_path, "caricature(conv3, 'photo.png')")
    assert sidecars["caricature(conv3, 'photo.png')"]["files"][0]["path"] == "photo.png"


# ---- many directions from one file ----


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".NPY"])
def test_a_matrix_of_directions_renders_one_unit_per_row_in_one_product(tmp_path, suffix):
    matrix = torch.randn(5, CHANNELS, generator=torch.Generator().manual_seed(1))
    path = tmp_path / f"dirs{suffix}"
    with open(path, "wb") as file:  # numpy.save would add .npy to a.NPY
        numpy.save(file, matrix.numpy()) if suffix.lower() == ".npy" else torch.save(matrix, file)
    target = f"direction(conv3, '{path}')"
    sidecar = render(tmp_path, target)[target]
    assert sidecar["objective"] == f"target: {target}, maximized (one unit per direction of its range)"
    units = sidecar["units"]
    assert [u["label"] for u in units] == ["0", "1", "2", "3", "4"]
    assert [u["direction"] for u in units] == [0, 1, 2, 3, 4] and all(u["channel"] is None for u in units)
    assert [u["image"] for u in units] == [f"unit_000{k}.png" for k in range(5)]
    assert [u["objective"] for u in units] == [f"{target}[{k}]" for k in range(5)]
    assert all(u["status"] == "ok" and u["activation_final"] > u["activation_start"] for u in units)

    # The five rows share a batch, scored by one (5, C) matrix product.
    settings = RenderSettings(model=TINY, weights="random", size=32)
    run = Run([JobRequest(parse_target(target), settings, str(tmp_path / "plan"))], RunSettings(quiet=True), say=lambda _: None)
    objectives = [o for unit in run.jobs[0].units for o in unit.objectives]
    plan = batch_plan(objectives, torch.device("cpu"))
    assert plan is not None and plan.shape == (5, CHANNELS)
    torch.testing.assert_close(plan, matrix)


def test_rows_select_some_directions_and_one_vector_is_one_unit_as_before(tmp_path):
    numpy.save(tmp_path / "dirs.npy", numpy.random.default_rng(0).standard_normal((5, CHANNELS)).astype(numpy.float32))
    numpy.save(tmp_path / "one.npy", numpy.random.default_rng(1).standard_normal(CHANNELS).astype(numpy.float32))
    picked = f"-direction_neuron(conv3, '{tmp_path}/dirs.npy')[1,3-4]"
    single = f"direction(conv3, '{tmp_path}/dirs.npy')[2]"
    vector = f"direction(conv3, '{tmp_path}/one.npy')"
    sidecars = render(tmp_path, picked, single, vector)
    assert [u["label"] for u in sidecars[picked]["units"]] == ["1", "3", "4"]
    assert [u["image"] for u in sidecars[single]["units"]] == ["unit_0002.png"]
    [unit] = sidecars[vector]["units"]
    assert unit["image"] == "unit.png" and unit["label"] == vector and unit["channel"] is None and "direction" not in unit
    assert unit["activation_final"] > unit["activation_start"]


def test_bad_rows_and_matrices_fail_in_one_line(tmp_path):
    numpy.save(tmp_path / "dirs.npy", numpy.ones((5, CHANNELS), dtype=numpy.float32))
    numpy.save(tmp_path / "wide.npy", numpy.ones((5, 20), dtype=numpy.float32))
    numpy.save(tmp_path / "cube.npy", numpy.ones((2, 2, CHANNELS), dtype=numpy.float32))
    numpy.save(tmp_path / "holes.npy", numpy.eye(3, CHANNELS, dtype=numpy.float32) * [[1], [0], [1]])
    d = f"direction(conv3, '{tmp_path}/dirs.npy')"
    assert _one_line_error(tmp_path, f"{d}[3-7]") == (
        f"fv: error: target {d}[3-7]: row 5 is out of range for direction file {tmp_path}/dirs.npy, which has 5 rows (0-4)"
    )
    assert _one_line_error(tmp_path, f"{d}[x]").startswith("fv: error: target: expected rows like 3, 0-63 or 0,5,9-12 at column")
    (tmp_path / "junk.npy").write_bytes(b"garbage, not numbers")
    numpy.save(tmp_path / "objects.npy", numpy.array([{"a": 1}], dtype=object), allow_pickle=True)
    for name, reason in (("junk", "it is not a .npy file"), ("objects", "it holds Python objects, which fv does not load")):
        target = f"direction(conv3, '{tmp_path}/{name}.npy')"
        assert _one_line_error(tmp_path, target) == (
            f"fv: error: target {target}: direction file {tmp_path}/{name}.npy: not an array of numbers fv can read ({reason})"
        )
    assert _one_line_error(tmp_path, "direction(conv3, random:3)[0]").startswith(
        "fv: error: target: rows ([...]) select directions of a file; this direction is not read from a file at column 27"
    )
    assert _one_line_error(tmp_path, f"{d} + conv2:0-1") == (
        f"fv: error: target {d} + conv2:0-1: only one atom of a target may name several units, "
        f"and {d}[0-4] and conv2:0-1 both do"
    )
    assert _one_line_error(tmp_path, f"interpolate({d}, conv3:0, frames=3)") == (
        f"fv: error: target interpolate({d}, conv3:0, frames=3): direction file {tmp_path}/dirs.npy holds 5 directions; "
        f"name one with [ROW], such as {d}[0]"
    )
    wide = f"direction(conv3, '{tmp_path}/wide.npy')"
    assert _one_line_error(tmp_path, wide) == (
        f"fv: error: target {wide}: direction file {tmp_path}/wide.npy holds 5 directions of 20 values; layer conv3 has 12 channels"
    )
    cube = f"direction(conv3, '{tmp_path}/cube.npy')"
    assert _one_line_error(tmp_path, cube) == (
        f"fv: error: target {cube}: direction file {tmp_path}/cube.npy: an array of shape (2, 2, 12); "
        "expected one vector (C,) or K vectors as a K x C matrix"
    )
    holes = f"direction(conv3, '{tmp_path}/holes.npy')"
    assert _one_line_error(tmp_path, holes) == (
        f"fv: error: target {holes}: direction file {tmp_path}/holes.npy: row 1 is all zeros, which points nowhere; leave it out with [ROWS]"
    )
    assert ": 2 units, 0 already rendered" in fv("render", *TINY_QUICK, "--out", str(tmp_path / "ok"), "--dry-run", "--", f"{holes}[0,2]")


def test_a_dictionary_job_gets_a_grid_and_atlas_pages(tmp_path):
    numpy.save(tmp_path / "dirs.npy", numpy.random.default_rng(0).standard_normal((4, 512)).astype(numpy.float32))
    out = tmp_path / "out"
    fv("render", *QUICK, "--out", str(out), "--quiet", "--atlas", "--", f"direction(mixed4a, '{tmp_path}/dirs.npy')", "mixed4a:2", "-mixed4a:2-3")
    [folder] = [p.parent for p in out.rglob("grid.json") if "direction" in p.parent.name]
    assert Image.open(folder / "grid.png").size[0] > 2 * 48  # a row of four cells
    pages = sorted(p.name for p in (folder / "units").glob("*.html"))
    assert pages == ["0.html", "1.html", "2.html", "3.html"]
    page = (folder / "units" / "2.html").read_text()
    # Row 2 is a direction, not channel 2: mixed4a:2 and -mixed4a:2 are no renders of it.
    assert "Other renders of this channel" not in page and "dirs.npy" in page and "<th>direction</th><td>2</td>" in page
    channel_page = (out / "googlenet" / "mixed4a" / "units" / "2.html").read_text()
    assert "Other renders of this channel" in channel_page and "dirs.npy" not in channel_page


def test_the_photo_goes_through_its_images_transforms_at_every_step():
    """An image identical to the photo is at distance 0 from it at every step, whatever the
    transforms draw: the photo is transformed with its image's own draws. Compared with the
    untransformed photo instead, the same image is far from it."""
    from fvcli.optvis.engine import PhotoSteps, _Scorer
    from fvcli.optvis.images import load_image
    from fvcli.optvis.transforms import Draws, Pipeline

    model = load_model("googlenet", "random", 0, quiet=True)
    photo = load_image(Path(__file__).parents[1] / "configs" / "images" / "rings_centre.png", 64)
    cpu = torch.device("cpu")
    probe = _Scorer(model, [Inversion("inception3b", torch.ones(1), "probe", None)], cpu, model.normalization, None, bf16=False)
    target = probe.photos_seen(photo[None], ("inception3b",))["inception3b"][0].float()
    inversion = Inversion("inception3b", target, "inversion(mixed3b, 'rings')", None, photo=photo)
    seeds = [41]
    score = _Scorer(model, [inversion], cpu, model.normalization, None, bf16=False)
    photo_steps, pipeline, draws = PhotoSteps([inversion], seeds, cpu), Pipeline.preset("standard"), Draws(seeds)
    for step in (0, 7, 31):
        image = pipeline(photo[None], draws, step)
        aligned, _ = score(image, photos=photo_steps(score, pipeline, step))
        assert aligned.item() == pytest.approx(0.0, abs=1e-6)
        unaligned, _ = score(image)  # against the untransformed photo's activations
        assert unaligned.item() < -0.05
