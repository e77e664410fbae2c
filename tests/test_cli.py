"""The command line end to end: files and sidecars, determinism, exit statuses, one-line errors."""

import json
import os
import re
import subprocess
import sys
import textwrap

from PIL import Image

from conftest import QUICK, TINY, fv
from fvcli import __version__


def test_render_writes_unit_pngs_grid_and_sidecar(tmp_path):
    out = tmp_path / "out"
    # 24 steps: units that start at exactly 0 need a few steps of the ReLU redirect to come alive.
    fv("render", "mixed4a:3,7,100-101", *QUICK, "--steps", "24", "--out", str(out))
    folder = out / "googlenet" / "mixed4a"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["grid.json", "grid.png", "mixed4a_0003.png", "mixed4a_0007.png", "mixed4a_0100.png", "mixed4a_0101.png"]
    assert Image.open(folder / "mixed4a_0003.png").size == (48, 48)
    umask = os.umask(0)
    os.umask(umask)
    assert all((folder / n).stat().st_mode & 0o777 == 0o666 & ~umask for n in names)  # not mkstemp's 0600
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary files left
    grid = Image.open(folder / "grid.png")
    assert grid.width < grid.height < grid.width * 1.5  # 2 x 2 cells, each with a label strip

    sidecar = json.loads((folder / "grid.json").read_text())
    assert sidecar["schema_version"] == 1 and sidecar["fv_version"] == __version__
    assert sidecar["model"]["name"] == "googlenet" and sidecar["model"]["weights"] == "random(seed=0)"
    assert (sidecar["layer"], sidecar["layer_module"]) == ("mixed4a", "inception4a")
    assert "channel" in sidecar["objective"]
    settings = sidecar["settings"]
    assert (settings["steps"], settings["size"], settings["lr"], settings["seed"]) == (24, 48, 0.05, 0)
    from fvcli.optvis.precision import cpu_has_bf16

    assert settings["parameterization"]["name"] == "fourier"
    chosen = sidecar["engine"]["dtype"]["chosen"]  # auto: the faster, measured, where the CPU has native bf16
    assert settings["dtype"] == chosen == (chosen if cpu_has_bf16() else "float32")
    assert [t["name"] for t in settings["transforms"]] == ["pad", "jitter", "scale", "rotate", "jitter"]
    assert [u["channel"] for u in sidecar["units"]] == [3, 7, 100, 101]
    for unit in sidecar["units"]:
        assert (folder / unit["image"]).is_file()
        assert unit["status"] == "ok" and unit["activation_final"] > unit["activation_start"]
        assert unit["objective"] == f"mixed4a:{unit['channel']}"
    assert sidecar["timing"]["seconds"] > 0 and sidecar["timing"]["units_per_second"] > 0
    assert sidecar["timing"]["image_steps_per_second"] > 0 and sidecar["timing"]["device"].startswith("cpu")
    assert set(sidecar["environment"]) >= {"python", "torch", "torchvision"}


def test_same_command_same_seed_writes_identical_pngs(tmp_path):
    for run in ("a", "b"):
        fv("render", "mixed3a:1-2", *QUICK, "--seed", "5", "--out", str(tmp_path / run))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 3
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    fv("render", "mixed3a:1-2", *QUICK, "--seed", "6", "--out", str(tmp_path / "c"))
    other = tmp_path / "c" / "googlenet" / "mixed3a" / "mixed3a_0001.png"
    assert other.read_bytes() != (tmp_path / "a" / "googlenet" / "mixed3a" / "mixed3a_0001.png").read_bytes()


def test_spec_file_with_cli_override(tmp_path):
    spec = tmp_path / "run.yaml"
    spec.write_text(textwrap.dedent(f"""
        weights: random
        out: {tmp_path / 'out'}
        steps: 500
        size: 40
        jobs:
          - layer: mixed3a
            channels: 0-1
          - name: named-job
            layer: conv2d2
            channels: [5]
            size: 56
    """))
    fv("render", str(spec), "--steps", "4")
    first = json.loads((tmp_path / "out" / "googlenet" / "mixed3a" / "grid.json").read_text())
    second = json.loads((tmp_path / "out" / "named-job" / "grid.json").read_text())
    assert first["settings"]["steps"] == second["settings"]["steps"] == 4  # the command line wins
    assert (first["settings"]["size"], second["settings"]["size"]) == (40, 56)
    assert second["layer"] == "conv2d2" and second["layer_module"] == "conv3"
    assert second["job"]["name"] == "named-job"


def test_custom_factory_model(tmp_path):
    fv("render", "conv2:0-3", "--model", TINY, "--weights", "random", "--steps", "10", "--size", "32", "--out", str(tmp_path))
    sidecar = json.loads((tmp_path / "tiny_model.make" / "conv2" / "grid.json").read_text())
    assert sidecar["settings"]["normalization"] is None  # [0, 1] RGB for custom models
    assert all(u["activation_final"] > u["activation_start"] for u in sidecar["units"])


def test_the_output_of_a_model_that_returns_a_dict_is_named_output(tmp_path):
    heads = TINY.replace(":make", ":make_dict_output")
    line = fv("render", "logit:2", "--model", heads, "--size", "32", "--out", str(tmp_path), code=2).strip()
    assert line == (
        "fv: error: target logit:2: the model returns a dict with keys logits (1, 5), feat (1, 12, 8, 8); "
        "name one element as logit@logits:2"
    )
    fv("render", "logit@logits:2", "output@feat:0-1", "--model", heads, "--weights", "random", "--steps", "4", "--size", "32",
       "--out", str(tmp_path), "-q")
    folder = tmp_path / "tiny_model.make_dict_output"
    assert json.loads((folder / "logit_logits_2" / "grid.json").read_text())["units"][0]["objective"] == "logit@logits:2"
    assert sorted(p.name for p in (folder / "output_feat").glob("*.png")) == ["grid.png", "output_feat_0000.png", "output_feat_0001.png"]
    rows = [line.split()[:4] for line in fv("layers", "--model", heads, "--size", "32", "output*").splitlines()[1:]]
    assert rows == [["output@logits", "5", "flat", "(1,"], ["output@feat", "12", "nchw", "(1,"]]


def test_dead_units_are_flagged_and_failed_units_exit_1(tmp_path):
    broken = TINY.replace(":make", ":make_broken")
    output = fv("render", "broken:0-2", "--model", broken, "--steps", "4", "--size", "16", "--out", str(tmp_path), code=1)
    folder = tmp_path / "tiny_model.make_broken" / "broken"
    units = {u["channel"]: u for u in json.loads((folder / "grid.json").read_text())["units"]}
    assert units[0]["status"] == "dead" and units[0]["activation_final"] == 0.0
    assert units[1]["status"] == "failed" and units[1]["image"] is None
    assert units[1]["error"] == "the objective became NaN or infinite at step 1"
    assert units[2]["status"] == "ok" and units[2]["activation_final"] > units[2]["activation_start"]
    assert not (folder / "broken_0001.png").exists() and (folder / "broken_0002.png").exists()
    assert (folder / "grid.png").exists()
    assert "dead units in" in output and "failed units in" in output


def test_version_and_subprocess_entry_points(tmp_path):
    assert fv("--version").strip() == f"fv {__version__}"
    done = subprocess.run(
        [sys.executable, "-m", "fvcli", "render", "conv2d0:0-1", *QUICK, "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # stdout stays clean; messages go to stderr
    assert "2 units of googlenet conv2d0" in done.stderr and "it/s" not in done.stderr  # no bar off a terminal
    assert (tmp_path / "googlenet" / "conv2d0" / "grid.png").exists()
    quiet = subprocess.run(
        [sys.executable, "-m", "fvcli", "render", "conv2d0:0", *QUICK, "--out", str(tmp_path), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""


def test_bare_fv_prints_the_help_on_stdout_and_exits_0():
    done = subprocess.run([sys.executable, "-m", "fvcli"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith("Usage: fv [OPTIONS] COMMAND [ARGS]...")
    assert "Exit statuses:" in done.stdout and "render    Render feature visualizations" in done.stdout


def test_layers_lists_names_with_aliases_shapes_and_channels():
    lines = fv("layers", "inception4*").splitlines()
    assert lines[0].split() == ["layer", "alias", "channels", "layout", "shape", "(128", "px)"]
    assert lines[1].split()[:4] == ["inception4a", "mixed4a", "512", "nchw"]
    assert all(line.startswith("inception4") for line in lines[1:])


def test_a_single_channel_target_is_named_by_its_channel(tmp_path):
    fv("render", "mixed4a:97", *QUICK, "--out", str(tmp_path), "--quiet")
    folder = tmp_path / "googlenet" / "mixed4a"
    assert sorted(p.name for p in folder.iterdir()) == ["grid.json", "grid.png", "mixed4a_0097.png"]
    assert json.loads((folder / "grid.json").read_text())["units"][0]["channel"] == 97


def test_no_more_workers_than_units(tmp_path, tiny):
    output = fv("render", "conv2:0", "--model", tiny, "--weights", "random", "--steps", "2", "--size", "32", "--workers", "4", "--out", str(tmp_path))
    assert "worker processes" not in output  # one unit: rendered in this process, no worker started
    assert (tmp_path / "tiny_model.make" / "conv2" / "grid.json").is_file()


def _help(*command: str) -> str:
    from click.testing import CliRunner

    from fvcli.cli import cli

    result = CliRunner().invoke(cli, [*command, "--help"], env={"COLUMNS": "80"}, prog_name="fv")
    assert result.exit_code == 0, result.output
    return result.output


def test_help_at_80_columns_breaks_no_word_and_shows_each_default_once():
    from fvcli.specs.settings import OPTIONS, examples_options

    for command, options in (("render", OPTIONS), ("examples", examples_options())):
        text = re.sub(r"(?<=[a-z]-)\n +", "", _help(command))  # a hyphenated word may break after its hyphen
        words = set(text.split())
        for option in options:  # a help text's every word appears whole: none is split across lines
            broken = [word for word in option.help.split() if word not in words]
            assert not broken, f"{command} {option.cli_name}: {broken}"
    text = " ".join(_help("render").split())
    assert "scale=0.9/1/1.1,rotate=-10/0/10,jitter=4." in text
    assert "--param fourier|fft|pixel|lowres|laplacian|maco|cppn" in text
    assert "before it. [default: the job's layer]" in text and "default: the job's layer;" not in text
    assert "correlation. [default: on]" in text and "OUT does. [default: off]" in text
    commands = _help().split("Commands:")[1]
    assert "..." not in commands and len(commands.strip().splitlines()) == 7


def test_models_lists_own_names_then_counts_timms_and_says_when_nothing_matches():
    from click.testing import CliRunner

    from fvcli.cli import cli
    from fvcli.models.sources import timm_models

    lines = fv("models").splitlines()
    assert "googlenet" in lines and not any(line.startswith("timm:") and " " not in line for line in lines)
    assert lines[-1] == f"timm: {len(timm_models())} models; list them with a pattern, e.g. fv models 'timm:*' or fv models 'timm:convnext*'"
    assert fv("models", "timm:convnext_tiny").split() == ["timm:convnext_tiny"]
    result = CliRunner().invoke(cli, ["models", "nomatch*"], prog_name="fv")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == "fv: no model name matches 'nomatch*'; fv models lists them\n"


def test_counts_of_one_are_singular(tmp_path, tiny):
    from fvcli.messages import plural

    assert (plural(0, "unit"), plural(1, "unit"), plural(2, "unit image")) == ("0 units", "1 unit", "2 unit images")
    args = ["render", "conv2:5", "--model", tiny, "--weights", "random", "--steps", "2", "--size", "24", "--out", str(tmp_path)]
    folder = tmp_path / "tiny_model.make" / "conv2"
    assert f"fv: {folder}: 1 unit of {tiny} conv2 in " in fv(*args)
    assert f"fv: {folder}: 1 unit of {tiny} conv2 already rendered" in fv(*args)
    assert "1 unit, 0 already rendered, 1 to render" in fv(*args, "--force", "--dry-run")
