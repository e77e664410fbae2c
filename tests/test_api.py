"""The Python API: fvcli.render and fvcli.layers render models in memory and by name, leave a model
object as it came, write what `fv render` writes, and fail with the CLI's lines."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import numpy
import torch
import torchvision
from click.testing import CliRunner
from torch import nn

import fvcli
from conftest import TINY, fv, noise_photos
from fvcli.cli import cli
from tiny_model import make

FAST = {"steps": 6, "size": 24, "dtype": "float32"}


def snapshot(model: nn.Module) -> dict:
    """Everything fv must give back as it came: modes, values, devices, layouts, dtypes, hooks."""
    return {
        "training": [m.training for m in model.modules()],
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grad": [p.requires_grad for p in model.parameters()],
        "devices": [p.device for p in model.parameters()],
        "dtypes": [p.dtype for p in model.parameters()],
        "channels_last": [p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in model.parameters()],
        "hooks": [(list(m._forward_hooks), list(m._forward_pre_hooks), list(m._backward_hooks)) for m in model.modules()],
        "modules": [type(m).__name__ for m in model.modules()],
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    for key in ("training", "grad", "devices", "dtypes", "channels_last", "hooks", "modules"):
        assert after[key] == before[key], key
    assert after["state"].keys() == before["state"].keys()
    for name, value in before["state"].items():
        assert torch.equal(after["state"][name], value), name


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_model_object_renders_and_comes_back_as_it_came(mode):
    torch.manual_seed(0)  # make() draws from torch's shared state: one seed, whatever ran before
    model = make()
    getattr(model, mode)()
    model[0].register_forward_hook(lambda m, i, o: None)  # the caller's own hook stays
    before = snapshot(model)
    result = fvcli.render(model, "conv3:0-3", **FAST)
    assert_unchanged(model, before)
    assert [r["objective"] for r in result.records] == [f"conv3:{c}" for c in range(4)]
    assert all(r["status"] in ("ok", "dead") for r in result.records)
    assert [image.size for image in result.images] == [(24, 24)] * 4
    assert result.grid.size == fvcli.render(model, "conv3:0-3", **FAST).grid.size
    assert result.sidecar["model"]["weights"] == "in-memory"
    assert result.sidecar["engine"]["batchnorms_folded"] == 1  # in fv's copy
    assert result._repr_png_() == result.jobs[0].files["Sequential/conv3/grid.png"]


def test_a_channels_last_float64_model_keeps_its_layout_and_dtype():
    model = make().double().to(memory_format=torch.channels_last)
    before = snapshot(model)
    assert any(before["channels_last"])
    result = fvcli.render(model, "conv2:0-1", model_name="tiny64", **FAST)
    assert_unchanged(model, before)
    assert result.jobs[0].folder == "tiny64/conv2"


def test_a_torchvision_model_with_random_weights():
    model = torchvision.models.resnet18()  # random init, in train mode
    before = snapshot(model)
    result = fvcli.render(model, "layer2:0-1", steps=4, size=32, dtype="float32", normalize="imagenet")
    assert_unchanged(model, before)
    assert len(result.images) == 2 and result.images[0].size == (32, 32)
    assert result.sidecar["settings"]["normalization"]["mean"] == [0.485, 0.456, 0.406]


def test_a_bare_sequential_names_its_layers_by_digits():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.BatchNorm2d(6), nn.ReLU())
    before = snapshot(model)
    result = fvcli.render(model, "4:0-3", "neuron(2:1)", "layer(4)", **FAST)
    assert_unchanged(model, before)
    assert [job.folder for job in result.jobs] == ["Sequential/4", "Sequential/neuron_2_1", "Sequential/layer_4"]
    assert [r["objective"] for r in result.records] == ["4:0", "4:1", "4:2", "4:3"]
    assert [row["name"] for row in fvcli.layers(model)] == ["0", "1", "1_pre_relu", "2", "3", "4", "4_pre_relu"]
    assert_unchanged(model, before)


def test_diversity_gives_a_list_of_images_per_unit():
    result = fvcli.render(make(), "conv3:0-1", diversity=2, **FAST)
    assert [len(images) for images in result.images] == [2, 2]


def test_save_writes_the_files_of_fv_render_byte_for_byte(tmp_path):
    options = ["--steps", "4", "--size", "24", "--weights", "random"]
    fv("render", "conv3:0-2", "--model", TINY, *options, "--out", str(tmp_path / "cli"), "-q")
    result = fvcli.render(TINY, "conv3:0-2", steps=4, size=24, weights="random")
    folders = result.save(tmp_path / "api")
    cli_files = sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*") if p.is_file())
    api_files = sorted(p.relative_to(tmp_path / "api") for p in (tmp_path / "api").rglob("*") if p.is_file())
    assert cli_files == api_files and len(cli_files) == 5
    assert folders == [tmp_path / "api" / cli_files[0].parent]
    for name in cli_files:
        cli_bytes, api_bytes = (tmp_path / "cli" / name).read_bytes(), (tmp_path / "api" / name).read_bytes()
        if name.name == "grid.json":
            cli_json, api_json = json.loads(cli_bytes), json.loads(api_bytes)
            for sidecar in (cli_json, api_json):
                sidecar.pop("timing")
                sidecar["engine"].pop("load_seconds", None)
            assert cli_json == api_json
        else:
            assert cli_bytes == api_bytes, name
    # With out=, the API writes there itself, and a second call resumes: nothing to render.
    again = fvcli.render(TINY, "conv3:0-2", steps=4, size=24, weights="random", out=tmp_path / "cli")
    assert [r["seed"] for r in again.records] == [r["seed"] for r in result.records]


@pytest.mark.parametrize(
    "kwargs, args",
    [
        ({"steps": 0}, ["--steps", "0"]),
        ({"size": 4096}, ["--size", "4096"]),
        ({"param": "fourrier"}, ["--param", "fourrier"]),
        ({"normalize": "0.5,0.5/1,1,1"}, ["--normalize", "0.5,0.5/1,1,1"]),
    ],
)
def test_bad_options_raise_the_clis_line(kwargs, args):
    with pytest.raises(fvcli.FvError) as error:
        fvcli.render(TINY, "conv3:0", weights="random", **kwargs)
    output = CliRunner().invoke(cli, ["render", "conv3:0", "--model", TINY, "--weights", "random", *args]).output
    assert output.strip() == f"fv: error: {error.value}"


@pytest.mark.parametrize("target", ["conv3:0 +", "conv9:0", "conv3:99", "3*4"])
def test_bad_targets_raise_the_clis_line(target):
    with pytest.raises(fvcli.FvError) as error:
        fvcli.render(TINY, target, weights="random", **FAST)
    output = CliRunner().invoke(cli, ["render", target, "--model", TINY, "--weights", "random", "--size", "24"]).output
    assert output.strip() == f"fv: error: {error.value}"


def test_api_only_errors():
    with pytest.raises(fvcli.FvError, match="unknown option 'stpes'; did you mean steps"):
        fvcli.render(make(), "conv3:0", stpes=4)
    with pytest.raises(fvcli.FvError, match="expected an nn.Module or a model name, got int"):
        fvcli.render(42, "conv3:0")
    with pytest.raises(fvcli.FvError, match="needs a target"):
        fvcli.render(make())
    planned = fvcli.render(make(), "conv3:0-1", dry_run=True, **FAST)  # prints the plan, renders nothing
    assert planned.jobs == [] and planned._repr_png_() is None


def test_layers_lists_what_fv_layers_lists():
    listed = json.loads(fv("layers", "--model", TINY, "--json", "conv*"))["layers"]
    assert fvcli.layers(TINY, "conv*") == listed
    model = make().train()
    before = snapshot(model)
    assert fvcli.layers(model, "conv*") == listed  # shapes do not depend on weights
    assert_unchanged(model, before)


def test_objectives_compose_as_python_objects_and_print_as_their_target_text():
    objective = fvcli.channel("conv3", 5) - 0.5 * fvcli.neuron("conv2", 3)
    assert str(objective) == "conv3:5 - 0.5*neuron(conv2:3)"
    assert repr(objective) == "Target('conv3:5 - 0.5*neuron(conv2:3)')"
    assert objective == fvcli.target("conv3:5 - 0.5*neuron(conv2:3)")  # the parsed text is the same object
    assert str(fvcli.channel("4", range(4))) == "4:0-3"  # a Sequential's digit layer
    assert str(fvcli.neuron("conv2", [1, 2], y=3, x=4)) == "neuron(conv2:1-2, y=3, x=4)"
    assert str(2 * fvcli.deepdream("conv2") / 4) == "0.5*layer(conv2)"
    assert str(-fvcli.channel("conv3", 1) + fvcli.logit(3)) == "-conv3:1 + logit:3"
    assert str(fvcli.probability("tabby cat")) == "probability:'tabby cat'"
    assert str(fvcli.direction("conv3", torch.tensor([1.0, 0.0, -2.5]))) == "direction(conv3, [1, 0, -2.5])"
    assert str(fvcli.direction("conv3", "random:4")) == "direction(conv3, random:4)"
    assert str(fvcli.caricature("conv3", "a.jpg", cossim_pow=2)) == "caricature(conv3, 'a.jpg', cossim_pow=2)"
    assert str(fvcli.inversion("conv3", "a.jpg")) == "inversion(conv3, 'a.jpg')"
    frames = fvcli.interpolate(fvcli.channel("conv3", 1), "conv3:2", frames=3)
    assert str(frames) == "interpolate(conv3:1, conv3:2, frames=3)"

    model = make()
    by_object = fvcli.render(model, objective, frames, **FAST)
    by_text = fvcli.render(model, "conv3:5 - 0.5*neuron(conv2:3)", "interpolate(conv3:1, conv3:2, frames=3)", **FAST)
    pngs = [{k: v for k, v in r.jobs[0].files.items() if k.endswith(".png")} for r in (by_object, by_text)]
    assert pngs[0] == pngs[1] and len(pngs[0]) == 2  # the same images, byte for byte
    assert by_object.records[0]["objective"] == "conv3:5 - 0.5*neuron(conv2:3)"
    assert len(by_object.jobs[1].images[0]) == 3

    with pytest.raises(fvcli.FvError, match=r"only one atom of a target may name several channels"):
        fvcli.channel("conv3", [0, 1]) + fvcli.channel("conv2", [1, 2])
    with pytest.raises(fvcli.FvError, match=r"target: unexpected 'b' at column 3"):
        fvcli.channel("a b", 1)
    with pytest.raises(fvcli.FvError, match=r"give both y and x"):
        fvcli.neuron("conv2", 1, y=2)
    with pytest.raises(fvcli.FvError, match=r"unknown layer|conv9"):
        fvcli.render(model, fvcli.channel("conv9", 1), **FAST)


def test_objectives_refuse_products_and_quotients_of_objectives_with_fverror():
    a, b = fvcli.channel("conv3", 1), fvcli.channel("conv2", 0)
    allowed = "a number times an objective scales it (0.5 * a), an objective divides by a number (a / 2), and objectives add and subtract"
    refused = {
        "cannot multiply two objectives (conv3:1 * conv2:0)": lambda: a * b,
        "cannot divide by an objective (conv3:1 / conv2:0)": lambda: a / b,
        "cannot divide by an objective (2 / conv3:1)": lambda: 2 / a,
        "cannot multiply objective conv3:1 by a str": lambda: a * "2",
        "cannot add 1 to objective conv3:1": lambda: a + 1,
        "cannot subtract objective conv3:1 from 1": lambda: 1 - a,
    }
    for message, operation in refused.items():
        with pytest.raises(fvcli.FvError) as error:
            operation()
        assert str(error.value) == f"{message}: {allowed} (a - 0.5 * b)"
    with pytest.raises(fvcli.FvError, match=r"^cannot divide objective conv3:1 by 0: expected a finite number other than 0$"):
        a / 0
    assert str(2 * a / 4 - b * 3) == "0.5*conv3:1 - 3*conv2:0"  # what is allowed still is


def test_examples_gives_the_dataset_examples_as_data(tmp_path):
    folder = noise_photos(tmp_path / "photos", 5, size=(44, 40))
    model = make().train()
    before = snapshot(model)
    examples = fvcli.examples(model, "conv3:0-2", images=folder, k=3, crop=16)
    assert_unchanged(model, before)
    assert [r["channel"] for r in examples.records] == [0, 1, 2]
    top = examples.records[1]["top"]
    assert len(top) == 3 and [e["value"] for e in top] == sorted((e["value"] for e in top), reverse=True)
    assert {e["path"] for e in top} <= {f"p{i}.png" for i in range(5)}
    assert examples.strip(1).size == (3 * 16 + 2 * 2, 16) and examples.strip(1, bottom=True).size[1] == 16
    crops = examples.crops(1)
    assert len(crops) == 3 and crops[0].size == (16, 16)
    assert examples._repr_png_().startswith(b"\x89PNG")
    assert repr(examples) == "Examples(Sequential, 1 layer, 3 channels, in memory)"  # print() shows a summary
    assert repr(examples.layers[0]) == "LayerExamples(Sequential/conv3/examples, 3 channels, k=3)"
    # The files `fv examples` writes, byte for byte (the strips; examples.json up to its folder).
    cli_options = ["--weights", "random", "--images", str(folder), "--k", "3", "--crop", "16", "--out", str(tmp_path / "cli"), "-q"]
    fv("examples", "conv3:0-2", "--model", TINY, *cli_options)
    again = fvcli.examples(TINY, "conv3:0-2", images=folder, k=3, crop=16, weights="random")
    again.save(tmp_path / "api")
    strips = sorted((tmp_path / "cli").rglob("*.png"))
    assert len(strips) == 6
    for strip in strips:
        assert strip.read_bytes() == (tmp_path / "api" / strip.relative_to(tmp_path / "cli")).read_bytes()
    with pytest.raises(fvcli.FvError, match="no such folder|folder not found"):
        fvcli.examples(model, "conv3:0", images=tmp_path / "nowhere")
    with pytest.raises(fvcli.FvError, match="unknown option 'kk'; did you mean k"):
        fvcli.examples(model, "conv3:0", images=folder, kk=3)


def test_a_result_prints_as_a_short_summary(tmp_path):
    broken = TINY.replace(":make", ":make_broken")
    result = fvcli.render(broken, "broken:0-2", "layer(broken)", steps=4, size=16, out=tmp_path)
    assert str(result) == repr(result) == f"Result({broken}, 2 jobs, 4 units: 1 ok, 1 dead, 2 failed, out={tmp_path})"
    assert repr(result.jobs[0]) == "JobResult(tiny_model.make_broken/broken, 3 units: 1 ok, 1 dead, 1 failed)"
    in_memory = fvcli.render(make(), "conv3:0-1", weights="random", **FAST)
    assert str(in_memory) == "Result(Sequential, 1 job, 2 units: 2 ok, in memory)"  # a temporary folder, removed
    assert len(json.dumps(in_memory.sidecar)) > 2000  # what print() used to show, and more


def test_importing_fvcli_stays_light():
    code = (
        "import sys, fvcli; fvcli.__version__; assert 'torch' not in sys.modules and 'fvcli.api' not in sys.modules; "
        "fvcli.render; assert 'fvcli.api' in sys.modules and 'torch' not in sys.modules and 'fvcli.cli' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})


@pytest.mark.parametrize("page", ["README.md", "docs/python.md"])
def test_the_python_examples_of_the_readme_and_the_python_page_run(tmp_path, monkeypatch, page):
    text = (Path(__file__).parents[1] / page).read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, page, "exec"), {})
    assert (tmp_path / "outputs" / "run" / "Sequential" / "2" / "grid.png").is_file()


def test_a_model_that_returns_a_dict_or_a_tuple_names_its_outputs_elements():
    from tiny_model import make_dict_output, make_tuple_output

    model = make_dict_output()
    with pytest.raises(fvcli.FvError) as error:
        fvcli.render(model, "logit:2", **FAST)
    assert str(error.value) == (
        "target logit:2: the model returns a dict with keys logits (1, 5), feat (1, 12, 6, 6); "
        "name one element as logit@logits:2"
    )
    with pytest.raises(fvcli.FvError, match=r"target output:0: the model returns a dict .*; name one element as output@logits$"):
        fvcli.render(model, "output:0", **FAST)
    with pytest.raises(fvcli.FvError, match=r"the model's output has no element @logit: it returns a dict with keys logits"):
        fvcli.render(model, "logit@logit:2", **FAST)
    with pytest.raises(fvcli.FvError, match=r"logit and probability need a model whose output is \(N, classes\); .* element @feat gives"):
        fvcli.render(model, "logit@feat:2", **FAST)

    result = fvcli.render(model, "logit@logits:2", fvcli.probability(1, "logits"), "output@feat:0-1", weights="random", **FAST)
    records = [r for job in result.jobs for r in job.records]
    assert [r["objective"] for r in records] == ["logit@logits:2", "probability@logits:1", "output@feat:0", "output@feat:1"]
    assert all(r["status"] == "ok" and r["activation_final"] > r["activation_start"] for r in records)  # each went up
    assert [row["name"] for row in fvcli.layers(model)][-2:] == ["output@logits", "output@feat"]

    pair = make_tuple_output()
    with pytest.raises(fvcli.FvError, match=r"target logit:2: the model returns a tuple of @0 \(1, 12, 6, 6\), @1 \(1, 5\); name one element as logit@1:2$"):
        fvcli.render(pair, "logit:2", **FAST)
    assert fvcli.render(pair, fvcli.logit(2, element=1), **FAST).records[0]["objective"] == "logit@1:2"
NOTEBOOK = Path(__file__).parents[1] / "docs" / "fv.ipynb"


def _outputs(cell: dict) -> tuple[str, set[str]]:
    """A code cell's text (streams and plain-text results) and the kinds of data it displayed."""
    text, kinds = "", set()
    for output in cell.get("outputs", []):
        text += "".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", ""))
        kinds |= set(output.get("data", {}))
    return text, kinds


def _shows_its_images(notebook: dict) -> None:
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(cell.get("id") for cell in notebook["cells"])  # nbformat 4.5: no MissingIDFieldWarning
    makers = [cell for cell in code if "fvcli.render(" in "".join(cell["source"])]
    assert len(makers) == 5
    for cell in makers + [cell for cell in code if cell["id"] == "one-image"]:
        assert "image/png" in _outputs(cell)[1], f"cell {cell['id']} shows no image"
    text = "".join(_outputs(cell)[0] for cell in code)
    # a term that is lowered reads the layer before its ReLU (--pre-relu auto); the digits model's
    # Linear layer fixes its size, and its images are grayscale
    assert "layer2:1 - 0.5*neuron(layer2_pre_relu:2)" in text and "['L', 'L', 'L', 'L'] seen at 28 px" in text
    assert "IProgress" not in text and "Error" not in text


def test_the_committed_notebook_shows_its_images_and_stays_small():
    assert NOTEBOOK.stat().st_size < 400_000  # pictures embedded, small enough to browse on a code host
    _shows_its_images(json.loads(NOTEBOOK.read_text()))


def test_the_notebook_runs_in_a_jupyter_kernel_and_shows_its_images(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []  # what the test checks is this run's
    # The kernel is this Python, with this fvcli (PYTHONPATH) and the suite's FV_DEVICE=cpu.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(NOTEBOOK.parents[1]), os.environ.get("PYTHONPATH", "")])}
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute(env=env)
    _shows_its_images(json.loads(nbformat.writes(notebook)))


def test_the_objects_never_truncate_what_they_are_given(tmp_path):
    """Issue 22, B5 and C10: floats are not cut to integers, a matrix is not flattened into one
    direction, a complex vector keeps no half of itself, a path is written so the grammar reads it
    back, and a range of 10^8 channels is refused before it is listed."""
    bad = {
        "channel [2.7]": lambda: fvcli.channel("conv2", [2.7]),
        "neuron y=1.9": lambda: fvcli.neuron("conv2", 1, y=1.9, x=0),
        "frames=2.9": lambda: fvcli.interpolate(fvcli.channel("conv2", 0), fvcli.channel("conv2", 1), frames=2.9),
        "2x8 tensor": lambda: fvcli.direction("conv2", torch.ones(2, 8)),
        "complex": lambda: fvcli.direction("conv2", torch.ones(8, dtype=torch.complex64)),
        "10^8 channels": lambda: fvcli.channel("conv2", range(10**8)),
        "10^8 generator": lambda: fvcli.channel("conv2", (c for c in range(10**8))),
        # A weight that float32 reads as 0 (or that is 0) renders a flat unit; one that overflows, nothing:
        "1e-300 weight": lambda: 1e-300 * fvcli.channel("conv2", 0),
        "underflowing product": lambda: 1e-4 * (1e-4 * fvcli.channel("conv2", 0)),
        "overflowing product": lambda: 1e4 * (1e4 * fvcli.channel("conv2", 0)),
        # An interpolation is frames, not an objective: these were raw TypeErrors.
        "2 * interpolate": lambda: 2 * fvcli.interpolate("conv2:0", "conv2:1"),
        "-interpolate": lambda: -fvcli.interpolate("conv2:0", "conv2:1"),
    }
    for what, make in bad.items():
        with pytest.raises(fvcli.FvError):
            make()
    assert str(fvcli.channel("conv2", range(2, 6))) == "conv2:2-5"
    assert str(fvcli.channel("conv2", numpy.int64(3))) == "conv2:3"
    odd = tmp_path / "a\\b 'c'.png"  # a backslash and single quotes: written between double quotes
    assert fvcli.caricature("conv2", str(odd)).describe().endswith(f'"{odd}")')


def test_a_direction_file_is_checked_before_it_is_made_whole(tmp_path):
    """An expanded (stride-0) tensor is 1.7 KB on disk and 400 GB made whole; a complex one would
    lose its imaginary part."""
    huge = tmp_path / "huge.pt"
    torch.save(torch.zeros(1).expand(20_000, 8_192), huge)
    assert huge.stat().st_size < 4096
    with pytest.raises(fvcli.FvError, match="values; at most"):
        fvcli.render(make(), f"direction(conv3, '{huge}')", **FAST)
    for name, value in (("c.pt", torch.ones(8, dtype=torch.complex64)), ("c.npy", numpy.ones(8, dtype=numpy.complex64))):
        path = tmp_path / name
        torch.save(value, path) if name.endswith(".pt") else numpy.save(path, value)
        with pytest.raises(fvcli.FvError, match="expected real numbers"):
            fvcli.render(make(), f"direction(conv3, '{path}')", **FAST)


def test_wrong_types_at_the_api_boundary_are_fv_errors(tmp_path, monkeypatch):
    """Issue 22, E14: every wrong-typed argument is an FvError naming it, never a raw TypeError,
    ValueError, OverflowError, AttributeError or a generator listed whole."""
    monkeypatch.chdir(tmp_path)  # out=[1] once made a folder '[1]' here
    model = make()
    wrong = {
        "channel layer None": lambda: fvcli.channel(None, 1),
        "deepdream layer list": lambda: fvcli.deepdream(["conv2"]),
        "logit label list": lambda: fvcli.logit([1]),
        "logit label float": lambda: fvcli.logit(2.5),
        "logit element list": lambda: fvcli.logit(1, [1]),
        "direction int": lambda: fvcli.direction("conv2", 5),
        "direction None": lambda: fvcli.direction("conv2", None),
        "direction 10**400": lambda: fvcli.direction("conv2", [10**400, 1]),
        "direction nan": lambda: fvcli.direction("conv2", [float("nan"), 1.0]),
        "direction endless": lambda: fvcli.direction("conv2", (float(i) for i in range(10**12))),
        "caricature photo int": lambda: fvcli.caricature("conv2", 5),
        "caricature cossim_pow str": lambda: fvcli.caricature("conv2", "a.png", "x"),
        "inversion photo None": lambda: fvcli.inversion("conv2", None),
        "interpolate ints": lambda: fvcli.interpolate(5, 6),
        "target int": lambda: fvcli.target(5),
        "target bytes": lambda: fvcli.target(b"conv2:0"),
        "times 10**400": lambda: fvcli.channel("conv2", 0) * 10**400,
        "render out list": lambda: fvcli.render(model, "conv2:0", out=[1], **FAST),
        "render steps list": lambda: fvcli.render(model, "conv2:0", steps=[1]),
        "render model int": lambda: fvcli.render(5, "conv2:0"),
        "examples images int": lambda: fvcli.examples(model, "conv2:0", images=5),
        "layers pattern int": lambda: fvcli.layers(model, 5),
        "layers weights int": lambda: fvcli.layers("googlenet", weights=5),
        "layers model int": lambda: fvcli.layers(5),
    }
    for what, call in wrong.items():
        try:
            call()
        except fvcli.FvError as error:
            assert "\n" not in str(error), what
        else:
            raise AssertionError(f"{what}: accepted")
    assert not list(tmp_path.iterdir())


def test_numpy_and_torch_integers_are_integers_for_every_option():
    """Channels took numpy's integers and options did not; their floats stay refused."""
    result = fvcli.render(make(), "conv3:0", **{**FAST, "steps": numpy.int64(2), "size": torch.tensor(32)})
    assert result.exit_code == 0 and len(result.images) == 1
    with pytest.raises(fvcli.FvError, match="--steps: expected a positive integer, got np.float64"):
        fvcli.render(make(), "conv3:0", **{**FAST, "steps": numpy.float64(2.0)})
    with pytest.raises(fvcli.FvError, match="^class: expected a class index or name, got 2.5$"):
        fvcli.logit(2.5)
