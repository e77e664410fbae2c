"""--param maco (a fixed magnitude spectrum, the phase optimized), fv spectrum and --spectrum,
--alpha-map, and --param cppn with --cppn-upscale: on the tiny model, random-weight GoogLeNet and
models of other channel counts, through the engine, the CLI and the API."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import fvcli
from conftest import TINY, fv
from fvcli.optvis.images import load_image
from fvcli.optvis.engine import render_batch
from fvcli.models.registry import load_model
from fvcli.optvis.objectives import channel
from fvcli.optvis.param import MacoParam, color_matrix, power_law
from fvcli.specs.settings import PARAM_LR, RenderSettings
from fvcli.optvis.spectrum import read_spectrum

CPU = torch.device("cpu")
LR = PARAM_LR  # each one's default --lr
FAST = ["--model", TINY, "--weights", "random", "--steps", "4", "--size", "32"]


@pytest.fixture(scope="module")
def googlenet():
    return load_model("googlenet", "random", seed=0, quiet=True)


@pytest.fixture(scope="module")
def tiny_model():
    return load_model(TINY, "random", seed=0, quiet=True)


def _pictures(folder, count=5, size=40):
    """Stripes and blobs of several colours and frequencies, as PNG and JPEG, one level down too."""
    rng = np.random.default_rng(0)
    (folder / "more").mkdir(parents=True)
    y, x = np.mgrid[0:size, 0:size + 8]
    for k in range(count):
        wave = np.sin(x * (k + 1) * 0.4 + y * 0.2 * k) * 0.5 + 0.5
        rgb = np.stack([wave, rng.random((size, size + 8)), wave[::-1]], -1)
        where = folder / ("more" if k % 2 else ".") / f"p{k}.{'png' if k % 3 else 'jpg'}"
        Image.fromarray((rgb * 255).astype(np.uint8)).save(where)


# ---- maco ----


@pytest.mark.parametrize("size", [16, 15])
def test_maco_optimizes_the_phase_and_the_magnitude_stays_exactly_the_fixed_spectrum(size, tiny_model):
    spectrum = power_law(size, 3) * torch.linspace(1, 2, 3).view(3, 1, 1)  # channels unalike
    fixed = type("Fixed", (), {"fitted": lambda self, s, c: spectrum, "describe": lambda self: {}})()
    param = MacoParam([3, 4], size, spectrum=fixed)
    optimizer = torch.optim.Adam(param.parameters(), lr=0.3)
    before = param().detach()
    for _ in range(5):
        optimizer.zero_grad()
        tiny_model.module(param()).sum().neg().backward()
        optimizer.step()
    assert (param() - before).abs().max() > 0.05  # the image did change
    with torch.no_grad():
        measured = torch.fft.rfft2(param.spatial(), norm="ortho").abs()
        assert torch.allclose(measured, spectrum.expand_as(measured), rtol=1e-4, atol=1e-4 * spectrum.max())
        # Standardizing scales every frequency alike (the mean aside): the shape of the spectrum holds.
        standardized = torch.fft.rfft2(param.raw(), norm="ortho").abs()
        ratio = standardized[..., 1:] / spectrum[..., 1:]
        assert torch.allclose(ratio, ratio.mean(dim=(1, 2, 3), keepdim=True), rtol=1e-3)
        assert param.raw().flatten(1).std(dim=1).sub(1).abs().max() < 1e-3


@pytest.mark.parametrize("param", ["maco", "cppn"])
def test_every_units_objective_rises_on_googlenet_and_the_tiny_model(param, googlenet, tiny_model):
    for model, layer, alias in ((googlenet, "inception4a", "mixed4a"), (tiny_model, "conv3", None)):
        objectives = [channel(layer, c, alias) for c in range(4)]
        # maco starts slowly: at 12-24 steps a unit can still be below its start. Lucid's standard transforms: what these thresholds were measured with (auto picks robust for GoogLeNet, which a random network's small image rises more slowly under).
        settings = RenderSettings(steps=48, size=48, param=param, lr=LR[param], dtype="float32", transforms="standard")
        result = render_batch(model, objectives, list(range(4)), settings, CPU)
        assert result.errors == [None] * 4
        assert all(final > start for start, final in zip(result.start, result.final)), (model.name, result.start, result.final)
        assert result.images.shape == (4, 3, 48, 48) and 0 <= result.images.min() and result.images.max() <= 1


@pytest.mark.parametrize("param", ["maco", "cppn"])
def test_an_image_is_the_same_alone_as_in_a_batch_of_three(param, googlenet):
    objectives = [channel("inception4a", c) for c in (10, 11, 12)]
    settings = RenderSettings(steps=0, size=40, param=param)
    together = render_batch(googlenet, objectives, [5, 6, 7], settings, CPU)
    alone = render_batch(googlenet, objectives[1:2], [6], settings, CPU)
    assert torch.equal(together.images[1], alone.images[0])
    assert together.start[1] == pytest.approx(alone.start[0], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("param", ["maco", "cppn"])
def test_an_image_moves_the_same_alone_as_in_a_batch_in_float64(param, float64):
    """In float32, rounding that differs between batch sizes is amplified by the steps (see
    test_fast_paths); in float64 what is left is the arithmetic, which has no batch dependence."""
    googlenet = load_model("googlenet", "random", seed=0, quiet=True)
    objective = channel("inception4a", 11)
    settings = RenderSettings(steps=3, size=40, param=param, lr=LR[param])
    moved = [render_batch(googlenet, [objective] * n, [6] * n, settings, CPU) for n in (1, 3)]
    assert torch.allclose(moved[0].images[0], moved[1].images[2], atol=1e-6)


def _grayscale_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2), nn.ReLU())


@pytest.mark.parametrize("param", ["maco", "cppn"])
def test_one_channel_models_get_one_channel_images(param, tmp_path):
    result = fvcli.render(_grayscale_model(), "3:1,3", param=param, size=32, steps=10, lr=LR[param], alpha_map=True, out=tmp_path)
    assert [image.mode for image in result.images] == ["L", "L"]
    assert all(r["activation_final"] > r["activation_start"] for r in result.records)
    described = result.sidecar["settings"]["parameterization"]
    assert described["name"] == param and described["channels"] == 1 and described["decorrelate"] is False
    alpha = [data for name, data in result.jobs[0].files.items() if name.endswith("_alpha.png")]
    assert len(alpha) == 2  # the API's result holds the extra files too
    assert {Image.open(io.BytesIO(data)).mode for data in alpha} == {"LA"}  # gray, the map as opacity


def test_the_sidecar_describes_every_constant(tmp_path):
    fv("render", "conv2:0", *FAST, "--param", "cppn", "--out", str(tmp_path / "c"))
    fv("render", "conv2:0", *FAST, "--param", "maco", "--out", str(tmp_path / "m"))
    cppn = json.loads((tmp_path / "c/tiny_model.make/conv2/grid.json").read_text())["settings"]["parameterization"]
    maco = json.loads((tmp_path / "m/tiny_model.make/conv2/grid.json").read_text())["settings"]["parameterization"]
    assert (cppn["layers"], cppn["width"], cppn["decorrelate"]) == (8, 24, False)
    assert "0.67" in cppn["activation"] and "0.6" in cppn["activation"] and "0.1" in cppn["init"]
    assert maco["magnitude"] == {"source": "power law", "formula": "1 / max(f, 1/size)^alpha, f in cycles per pixel", "alpha": 1.0}
    assert maco["optimized"] == "phase" and maco["standardize"]["eps"] == 1e-4 and maco["decorrelate"] is True


def test_diversity_works_and_interpolation_and_blur_steps_are_refused(tmp_path):
    fv("render", "conv2:0", *FAST, "--param", "maco", "--diversity", "2", "--out", str(tmp_path))
    sidecar = json.loads((tmp_path / "tiny_model.make/conv2/grid.json").read_text())
    assert sidecar["units"][0]["diversity_similarity"] is not None
    for param in ("maco", "cppn"):
        output = fv("render", "interpolate(conv2:0, conv2:1, frames=3)", *FAST, "--param", param, "--out", str(tmp_path / "i"), code=2)
        assert len(output.strip().splitlines()) == 1 and "interpolate(...)" in output and f"{param}'s images" in output
        output = fv("render", "conv2:0", *FAST, "--param", param, "--blur-every", "2", "--out", str(tmp_path / "b"), code=2)
        assert output.strip().splitlines() == [f"fv: error: target conv2:0: --blur-every: {param} " + (
            "keeps its magnitude spectrum fixed" if param == "maco" else "makes its image with a network, not pixels"
        ) + ", so it cannot be blurred; use the --blur penalty instead"]
    assert not (tmp_path / "i").exists() and not (tmp_path / "b").exists()


# ---- fv spectrum and --spectrum ----


def test_fv_spectrum_writes_the_mean_magnitude_spectrum_of_a_folder(tmp_path):
    _pictures(tmp_path / "photos")
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    output = fv("spectrum", str(tmp_path / "photos"), "-o", str(tmp_path / "s.pt"), "--size", "24")
    assert "spectrum of 5 images at 24 px (decorrelated, 1 unreadable skipped)" in output
    saved = torch.load(tmp_path / "s.pt", weights_only=True)
    assert (saved["size"], saved["count"], saved["skipped"], saved["colour"]) == (24, 5, 1, "decorrelated")
    assert saved["folder"] == str(tmp_path / "photos")
    assert saved["magnitude"].shape == (3, 24, 13)
    paths = sorted(p for p in (tmp_path / "photos").rglob("p*"))
    images = torch.stack([load_image(p, 24).double() for p in paths])
    decorrelated = torch.einsum("ij,njhw->nihw", torch.linalg.inv(color_matrix().double()), images)
    expected = torch.fft.rfft2(decorrelated, norm="ortho").abs().mean(0).float()
    assert torch.allclose(saved["magnitude"], expected, rtol=1e-5, atol=1e-6)

    fv("spectrum", str(tmp_path / "photos"), "-o", str(tmp_path / "g.pt"), "--size", "16", "--grayscale", "--quiet")
    gray = torch.load(tmp_path / "g.pt", weights_only=True)
    luma = torch.einsum("c,nchw->nhw", torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64), torch.stack([load_image(p, 16).double() for p in paths]))
    assert gray["colour"] == "grayscale" and gray["magnitude"].shape == (1, 16, 9)
    assert torch.allclose(gray["magnitude"][0], torch.fft.rfft2(luma, norm="ortho").abs().mean(0).float(), rtol=1e-5, atol=1e-6)


def test_fv_spectrum_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"\x89PNG but not really")
    _pictures(tmp_path / "photos", count=1)
    out = str(tmp_path / "s.pt")
    cases = [
        (["spectrum", str(tmp_path / "empty"), "-o", out], f"{tmp_path / 'empty'}: no JPEG or PNG images in it (searched recursively)"),
        (["spectrum", str(tmp_path / "a_file"), "-o", out], f"{tmp_path / 'a_file'}: not a folder; expected a folder of JPEG or PNG images"),
        (["spectrum", str(tmp_path / "nowhere"), "-o", out], f"{tmp_path / 'nowhere'}: folder not found"),
        (["spectrum", str(tmp_path / "broken"), "-o", out], f"{tmp_path / 'broken'}: none of its 1 image could be read"),
        (["spectrum", str(tmp_path / "photos"), "-o", str(tmp_path / "a_file" / "s.pt")], "is a file, not a folder"),
        (["spectrum", str(tmp_path / "photos"), "-o", str(tmp_path / "photos")], "a folder; expected a file name such as spectrum.pt"),
        (["spectrum", str(tmp_path / "photos"), "-o", out, "--size", "4"], "--size: expected at least 8 px for a spectrum, got 4"),
        (["spectrum", str(tmp_path / "photos"), "-o", out, "--size", "big"], "--size: expected a positive integer, got 'big'"),
    ]
    for args, message in cases:
        lines = fv(*args, code=2).strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fv: error: ") and message in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "broken", "empty", "photos"]
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.pt"))


def test_a_spectrum_file_renders_at_any_size_and_its_contents_decide_what_is_redone(tmp_path):
    _pictures(tmp_path / "photos")
    spectrum = tmp_path / "s.pt"
    fv("spectrum", str(tmp_path / "photos"), "-o", str(spectrum), "--size", "24", "--quiet")
    fitted = read_spectrum(str(spectrum)).fitted(37, 3)
    assert fitted.shape == (3, 37, 19) and torch.isfinite(fitted).all() and (fitted > 0).all()
    assert torch.allclose(read_spectrum(str(spectrum)).fitted(24, 3), torch.load(spectrum, weights_only=True)["magnitude"])
    args = ["render", "conv2:0-1", *FAST, "--param", "maco", "--spectrum", str(spectrum), "--out", str(tmp_path / "out")]
    fv(*args)
    sidecar = json.loads((tmp_path / "out/tiny_model.make/conv2/grid.json").read_text())
    magnitude = sidecar["settings"]["parameterization"]["magnitude"]
    assert magnitude["source"] == "file" and magnitude["size"] == 24 and magnitude["images"] == 5 and len(magnitude["sha256"]) == 64
    assert "2 units already rendered" in fv(*args)
    fv("spectrum", str(tmp_path / "photos"), "-o", str(spectrum), "--size", "20", "--quiet")  # same name, other contents
    assert "already rendered" not in fv(*args)
    again = json.loads((tmp_path / "out/tiny_model.make/conv2/grid.json").read_text())["settings"]["parameterization"]["magnitude"]
    assert again["size"] == 20 and again["sha256"] != magnitude["sha256"]


def test_a_bad_spectrum_is_refused_in_one_line_before_anything_renders(tmp_path):
    _pictures(tmp_path / "photos", count=2)
    good = tmp_path / "good.pt"
    fv("spectrum", str(tmp_path / "photos"), "-o", str(good), "--size", "16", "--quiet")
    (tmp_path / "garbage.pt").write_bytes(b"\x00 not a torch file")
    torch.save({"magnitude": torch.ones(3, 16, 9)}, tmp_path / "other.pt")
    torch.save({**torch.load(good, weights_only=True), "magnitude": torch.ones(3, 16, 5)}, tmp_path / "shape.pt")
    torch.save({**torch.load(good, weights_only=True), "magnitude": -torch.ones(3, 16, 9)}, tmp_path / "negative.pt")
    out = ["--out", str(tmp_path / "out")]
    cases = [
        (["--param", "maco", "--spectrum", str(tmp_path / "missing.pt")], "file not found; fv spectrum FOLDER -o FILE.pt measures one"),
        (["--param", "maco", "--spectrum", str(tmp_path / "photos")], "not a file; expected a .pt file that fv spectrum wrote"),
        (["--param", "maco", "--spectrum", str(tmp_path / "garbage.pt")], "not a spectrum file ("),
        (["--param", "maco", "--spectrum", str(tmp_path / "other.pt")], "not a spectrum file; expected a .pt file that fv spectrum wrote"),
        (["--param", "maco", "--spectrum", str(tmp_path / "shape.pt")], "its magnitude has shape (3, 16, 5)"),
        (["--param", "maco", "--spectrum", str(tmp_path / "negative.pt")], "its magnitudes must be finite, not negative, and not all 0"),
        (["--param", "maco", "--spectrum", str(good), "--no-decorrelate"], "measured in decorrelated colours; render without --no-decorrelate"),
        (["--spectrum", str(good)], "--spectrum is the fixed magnitude of --param maco; this job's --param is fourier"),
    ]
    for extra, message in cases:
        lines = fv("render", "conv2:0", *FAST, *extra, *out, code=2).strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fv: error: ") and message in lines[0], lines
    # An RGB spectrum does not fit a grayscale model; a grayscale spectrum fits any.
    with pytest.raises(fvcli.FvError, match="a spectrum of 3 channels, and this model's images have 1 channel; measure a grayscale one"):
        fvcli.render(_grayscale_model(), "3:0", param="maco", spectrum=str(good), steps=2, size=32)
    fv("spectrum", str(tmp_path / "photos"), "-o", str(tmp_path / "gray.pt"), "--size", "16", "--grayscale", "--quiet")
    fvcli.render(_grayscale_model(), "3:0", param="maco", spectrum=str(tmp_path / "gray.pt"), steps=2, size=32)
    assert not (tmp_path / "out").exists()


# ---- --alpha-map ----


def test_alpha_maps_are_written_recorded_resumed_and_merged(tmp_path):
    args = ["render", "conv2:0-2", *FAST, "--param", "maco", "--alpha-map", "--out", str(tmp_path)]
    fv(*args)
    folder = tmp_path / "tiny_model.make" / "conv2"
    units = json.loads((folder / "grid.json").read_text())["units"]
    assert [u["alpha_maps"] for u in units] == [[f"conv2_000{k}_alpha.png"] for k in range(3)]
    for k in range(3):
        mapped = Image.open(folder / f"conv2_000{k}_alpha.png")  # the image, the map as its opacity
        assert mapped.mode == "RGBA" and mapped.size == (32, 32)
        low, high = mapped.getchannel("A").getextrema()
        assert high == 255 and low < 200  # normalized per image, and not flat
        image = Image.open(folder / f"conv2_000{k}.png")
        assert mapped.convert("RGB").tobytes() == image.tobytes()
    (folder / "conv2_0001_alpha.png").unlink()  # the image alone is not a finished unit
    assert "2 units already rendered with these settings are kept" in fv(*args)
    assert (folder / "conv2_0001_alpha.png").exists()
    # Without --alpha-map the hash is the one of units rendered before the option existed.
    plain = ["render", "conv2:0", *FAST, "--param", "maco", "--out", str(tmp_path / "plain")]
    fv(*plain)
    assert "already rendered" in fv(*plain, "--no-alpha-map")

    shards = ["render", "conv2:0-3", *FAST, "--alpha-map", "--out", str(tmp_path / "sharded")]
    fv(*shards, "--shard", "0/2")
    fv(*shards, "--shard", "1/2")
    fv("merge", str(tmp_path / "sharded"))
    merged = json.loads((tmp_path / "sharded/tiny_model.make/conv2/grid.json").read_text())["units"]
    assert [u["alpha_maps"] for u in merged] == [[f"conv2_000{k}_alpha.png"] for k in range(4)]
    assert all((tmp_path / "sharded/tiny_model.make/conv2" / u["alpha_maps"][0]).exists() for u in merged)


# ---- their learning rates ----


def test_each_parameterization_has_its_own_learning_rate_unless_one_is_given(tmp_path):
    assert PARAM_LR == {"cppn": 0.002, "maco": 0.1}
    # At 0.05 (fourier's rate) these four CPPNs end as flat squares of colour within 16 steps.
    # --transforms none: what this checks is the learning rate; GoogLeNet declares 224 px, so any
    # preset moves a 32 px image by most of itself.
    fv("render", "mixed4a:0-3", "--weights", "random", "--steps", "16", "--size", "32", "--param", "cppn", "--transforms", "none", "--out", str(tmp_path / "default"))
    folder = tmp_path / "default" / "googlenet" / "mixed4a"
    sidecar = json.loads((folder / "grid.json").read_text())
    assert sidecar["settings"]["lr"] == 0.002  # the rate it was rendered at, recorded
    for unit in sidecar["units"]:
        assert unit["status"] == "ok" and unit["activation_final"] > unit["activation_start"]
        pixels = np.asarray(Image.open(folder / unit["image"]), dtype=np.float64).reshape(-1, 3)
        assert pixels.std(axis=0).mean() > 1  # a picture, not a flat colour (0)
    tiny = ["--model", TINY, "--weights", "random", "--size", "16"]
    fv("render", "conv3:0", *tiny, "--steps", "1", "--param", "cppn", "--lr", "0.05", "--out", str(tmp_path / "given"))
    assert json.loads((tmp_path / "given" / "tiny_model.make" / "conv3" / "grid.json").read_text())["settings"]["lr"] == 0.05
    assert "[default: 0.05; cppn 0.002; maco 0.1]" in " ".join(fv("render", "--help").split())

    # In a spec, each job's own parameterization decides, and an lr the spec gives wins.
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"model: {TINY}\nweights: random\nsteps: 1\nsize: 16\nparam: cppn\nout: {tmp_path / 'spec'}\njobs:\n"
        "  - {name: cppn, layer: conv3, channels: 0}\n  - {name: maco, layer: conv3, channels: 0, param: maco}\n"
        "  - {name: fourier, layer: conv3, channels: 0, param: fourier}\n  - {name: given, layer: conv3, channels: 0, lr: 0.01}\n"
    )
    fv("render", str(spec))
    rates = {name: json.loads((tmp_path / "spec" / name / "grid.json").read_text())["settings"]["lr"] for name in ("cppn", "maco", "fourier", "given")}
    assert rates == {"cppn": 0.002, "maco": 0.1, "fourier": 0.05, "given": 0.01}
    # And in the Python API.
    assert fvcli.render(TINY, "conv3:0", weights="random", steps=1, size=16, param="maco").sidecar["settings"]["lr"] == 0.1
    assert fvcli.render(TINY, "conv3:0", weights="random", steps=1, size=16, param="maco", lr=0.3).sidecar["settings"]["lr"] == 0.3


# ---- --cppn-upscale ----


def test_cppn_upscale_writes_a_larger_image_of_the_same_picture(tmp_path):
    fv("render", "conv2:0-1", "--model", TINY, "--weights", "random", "--steps", "24", "--size", "32",
       "--param", "cppn", "--lr", "0.02", "--cppn-upscale", "2", "--out", str(tmp_path))
    folder = tmp_path / "tiny_model.make" / "conv2"
    units = json.loads((folder / "grid.json").read_text())["units"]
    assert units[0]["upscaled_images"] == [{"scale": 2, "image": "conv2_0000.x2.png"}]
    for unit in units:
        normal = np.asarray(Image.open(folder / unit["image"]), dtype=np.float64)
        large = Image.open(folder / unit["upscaled_images"][0]["image"])
        assert large.size == (64, 64)
        down = np.asarray(large, dtype=np.float64).reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
        assert normal.std() > 5  # a picture, not a flat colour
        assert np.corrcoef(normal.ravel(), down.ravel())[0, 1] > 0.9
    result = fvcli.render(TINY, "conv2:0", weights="random", steps=2, size=16, param="cppn", cppn_upscale=3)
    assert any(name.endswith("conv2_0000.x3.png") for name in result.jobs[0].files)


@pytest.mark.parametrize("extra, message", [
    (["--param", "cppn", "--cppn-upscale", "0"], "--cppn-upscale: expected a positive integer, got 0"),
    (["--param", "cppn", "--cppn-upscale", "9"], "--cppn-upscale: expected a positive integer (at most 8), got 9"),
    (["--param", "cppn", "--cppn-upscale", "x"], "--cppn-upscale: expected a positive integer, got 'x'"),
    (["--cppn-upscale", "2"], "target conv2:0: --cppn-upscale renders a CPPN at a larger size; this job's --param is fourier, not cppn"),
    (["--param", "cppn", "--cppn-upscale", "8", "--size", "300"], "target conv2:0: --cppn-upscale 8: 8 x 300 px is more than 2048 px; at most 6 at --size 300"),
    (["--param", "mac"], "--param: expected one of fourier, pixel, lowres, laplacian, maco, cppn, got 'mac'; did you mean maco?"),
])
def test_bad_values_exit_2_in_one_line(tmp_path, extra, message):
    output = fv("render", "conv2:0", *FAST, *extra, "--out", str(tmp_path), code=2)
    assert output.strip().splitlines() == [f"fv: error: {message}"]
    assert not any(tmp_path.iterdir())
