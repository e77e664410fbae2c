"""Bad input: exit status 2, exactly one line naming what is wrong and where, and nothing written.

Every kind of bad input the batch-robustness issue lists has its exact message here. `{tmp}` stands
for the test's folder; spec files are written there as spec.yaml.
"""

import os
import pickle
import subprocess
import sys

import numpy
import pytest
import torch
import torchvision

from conftest import fv

SPEC_CASES = [
    # malformed YAML, with line and column
    ("jobs: [{layer: a}\nsteps: 3", "{tmp}/spec.yaml: line 2, column 1: invalid YAML: expected ',' or ']', but got '<scalar>'"),
    # an empty spec
    ("", "{tmp}/spec.yaml: the spec is empty; expected a mapping with a 'jobs:' list"),
    ("jobs: []", "{tmp}/spec.yaml: jobs: expected a non-empty list of jobs, got []"),
    # unknown keys, with a suggestion
    ("stpes: 5\njobs: [{layer: mixed4a}]", "{tmp}/spec.yaml: unknown key 'stpes'; did you mean 'steps'?"),
    ("jobs: [{layer: mixed4a, chanels: 3}]", "{tmp}/spec.yaml: jobs[0]: unknown key 'chanels'; did you mean 'channels'?"),
    # wrong types
    ("steps: many\njobs: [{layer: mixed4a}]", "{tmp}/spec.yaml: steps: expected a positive integer, got 'many'"),
    ("jobs: [{layer: mixed4a, steps: 2.5}]", "{tmp}/spec.yaml: jobs[0].steps: expected a positive integer, got 2.5"),
    ("jobs: mixed4a", "{tmp}/spec.yaml: jobs: expected a non-empty list of jobs, got 'mixed4a'"),
    # reversed and empty ranges
    ("jobs: [{layer: mixed4a, channels: 5-2}]", "{tmp}/spec.yaml: jobs[0].channels: reversed range 5-2; write 2-5"),
    ("jobs: [{layer: mixed4a, channels: []}]", "{tmp}/spec.yaml: jobs[0].channels: expected channels like 97, 0-511 or 3,7,100-107, got an empty list"),
    # a job name that would put its output outside --out
    ("jobs: [{layer: mixed4a, name: ../up}]",
     "{tmp}/spec.yaml: jobs[0].name: expected a folder name of letters, digits, '.', '_' and '-' (no '/' or '..'), got '../up'"),
    ("jobs: [{layer: mixed4a, name: /etc/fv}]",
     "{tmp}/spec.yaml: jobs[0].name: expected a folder name of letters, digits, '.', '_' and '-' (no '/' or '..'), got '/etc/fv'"),
    ("jobs: [{layer: mixed4a, name: ..}]",
     "{tmp}/spec.yaml: jobs[0].name: expected a folder name of letters, digits, '.', '_' and '-' (no '/' or '..'), got '..'"),
    # limits on input (docs/reliability.md): numbers finite and in range, sizes checked before expanding
    ("lr: .nan\njobs: [{layer: mixed4a}]", "{tmp}/spec.yaml: lr: expected a positive number, got nan"),
    ("jobs: [{layer: mixed4a, l1: 1e999}]", "{tmp}/spec.yaml: jobs[0].l1: expected a number of 0 or more (at most 1e6), got '1e999'"),
    ("normalize: {mean: [0, 0, 0], std: [.inf, 1, 1]}\njobs: [{layer: mixed4a}]",
     "{tmp}/spec.yaml: normalize: expected means from -1000 to 1000 and standard deviations from 1e-6 to 1000, got {{'mean': [0, 0, 0], 'std': [inf, 1, 1]}}"),
    ("transforms: [{scale: [.nan]}]\njobs: [{layer: mixed4a}]",
     "{tmp}/spec.yaml: transforms: scale: expected a non-empty list of factors from 0.1 to 10, got [nan]"),
    ("jobs: [{target: '1e999*mixed4a:0'}]",
     "{tmp}/spec.yaml: jobs[0].target: number 1e999 is too large (at most 1e6 in magnitude) at column 1 of '1e999*mixed4a:0'"),
    ("jobs: [{layer: mixed4a, channels: 0-999999999999}]", "{tmp}/spec.yaml: jobs[0].channels: channel 999999999999 is too large (at most 99999999)"),
    ("jobs: [{layer: mixed4a, channels: 0-99999999}]",
     "{tmp}/spec.yaml: jobs[0].channels: range 0-99999999 names 100000000 channels; a job renders at most 100000 units (split it into several jobs)"),
    ("jobs: [{layer: mixed4a, channels: '٣'}]",
     "{tmp}/spec.yaml: jobs[0].channels: expected channels like 97, 0-511 or 3,7,100-107, got '٣'; write digits as 0-9, not '٣'"),
    ("workers: 100000\njobs: [{layer: mixed4a}]", "{tmp}/spec.yaml: workers: expected a positive integer or auto (at most 256), got 100000"),
    # a key given twice (YAML would keep the last)
    ("steps: 3\nsteps: 4\njobs: [{layer: mixed4a}]", "{tmp}/spec.yaml: line 2, column 1: invalid YAML: key 'steps' given twice (first on line 1)"),
    ("jobs:\n  - layer: mixed4a\n    channels: 1\n    channels: 2\n",
     "{tmp}/spec.yaml: line 4, column 5: invalid YAML: key 'channels' given twice (first on line 3)"),
]

CLI_CASES = [
    # unknown model, layer, objective, device
    (["mixed4a:0", "--model", "alexnett"],
     "unknown model 'alexnett'; did you mean alexnet, googlenet, resnet50? (`fv models` lists them, or use a factory FILE.py:FUNC)"),
    (["mixed4z:0"],
     "target mixed4z:0: unknown layer 'mixed4z' for model googlenet; did you mean mixed4e, mixed4d, mixed4c? (`fv layers --model googlenet` lists them)"),
    (["mixed4a:0", "--objective", "nueron"], "--objective: expected one of channel, neuron, got 'nueron'; did you mean neuron?"),
    (["nueron(mixed4a:0)"],
     "target: unknown objective nueron(); did you mean neuron()? (known: caricature(), channel(), deepdream(), direction(), "
     "direction_neuron(), interpolate(), inversion(), layer(), neuron(), logit:, probability:) at column 1 of 'nueron(mixed4a:0)'"),
    (["mixed4a:0", "--device", "tpu"], "--device: expected auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    # a malformed --shard
    (["mixed4a:0", "--shard", "2/2"], "--shard: expected I/N with 0 <= I < N, such as 0/4, got '2/2'"),
    (["mixed4a:0", "--shard", "half"], "--shard: expected I/N with 0 <= I < N, such as 0/4, got 'half'"),
    # channels out of range, reversed or empty ranges
    (["mixed4a:512"], "target mixed4a:512: channel 512 is out of range for layer mixed4a, which has 512 channels (0-511)"),
    (["mixed4a:9-3"], "target: reversed range 9-3; write 3-9 at column 9 of 'mixed4a:9-3'"),
    (["mixed4a:"], "target: expected channels like 97, 0-511 or 3,7,100-107 at column 9 of 'mixed4a:'"),
    # zero or negative steps, size, lr; absurd sizes
    (["mixed4a:0", "--steps", "0"], "--steps: expected a positive integer, got 0"),
    (["mixed4a:0", "--steps", "-5"], "--steps: expected a positive integer, got -5"),
    (["mixed4a:0", "--size", "0"], "--size: expected a positive integer, got 0"),
    (["mixed4a:0", "--lr", "0"], "--lr: expected a positive number, got '0'"),
    (["mixed4a:0", "--lr", "-0.05"], "--lr: expected a positive number, got '-0.05'"),
    (["mixed4a:0", "--size", "5000"], "--size: expected a positive integer (at most 2048), got 5000"),
    # weights files: missing, corrupt, truncated, of another architecture
    (["mixed4a:0", "--weights", "{tmp}/missing.pt"], "--weights {tmp}/missing.pt: file not found (expected default, random, a weights name or a state-dict file)"),
    (["mixed4a:0", "--weights", "{tmp}/corrupt.pt"],
     "--weights {tmp}/corrupt.pt: cannot read a state dict from this file (it is not a PyTorch checkpoint, or it holds pickled Python objects, which fv does not load)"),
    (["mixed4a:0", "--weights", "{tmp}/truncated.pt"], "--weights {tmp}/truncated.pt: cannot read a state dict from this file (it is truncated or damaged)"),
    (["mixed4a:0", "--weights", "{tmp}/resnet18.pt"],
     "--weights {tmp}/resnet18.pt: weights do not fit the model: 342 missing (conv1.conv.weight, conv1.bn.weight, conv1.bn.bias "
     "and 339 more); 120 unexpected (conv1.weight, bn1.weight, bn1.bias and 117 more); 1 wrong shape (fc.weight)"),
    # an output folder that cannot be written (a file stands where a folder must go; as root, modes do not stop writes)
    (["mixed4a:0", "--out", "{tmp}/a-file/out"], "cannot write to output folder {tmp}/a-file/out/googlenet/mixed4a: {tmp}/a-file is a file, not a folder"),
    # limits on input (docs/reliability.md): every number finite and in range
    (["mixed4a:0", "--normalize", "nan,nan,nan/1,1,1"],
     "--normalize: expected means from -1000 to 1000 and standard deviations from 1e-6 to 1000, got 'nan,nan,nan/1,1,1'"),
    (["mixed4a:0", "--normalize", "1e999,0,0/1,1,1"],
     "--normalize: expected means from -1000 to 1000 and standard deviations from 1e-6 to 1000, got '1e999,0,0/1,1,1'"),
    (["mixed4a:0", "--normalize", "0.5,0.5,0.5/0,1,1"],
     "--normalize: expected means from -1000 to 1000 and standard deviations from 1e-6 to 1000, got '0.5,0.5,0.5/0,1,1'"),
    (["mixed4a:0", "--lr", "1e308"], "--lr: expected a positive number (at most 1000), got '1e308'"),
    (["mixed4a:0", "--lr", "nan"], "--lr: expected a positive number, got 'nan'"),
    (["mixed4a:0", "--diversity-weight", "inf"], "--diversity-weight: expected a number of 0 or more (at most 1e6), got 'inf'"),
    (["mixed4a:0", "--tv", "-1e999"], "--tv: expected a number of 0 or more, got '-1e999'"),
    (["mixed4a:0", "--transforms", "rotate=1e999"], "--transforms: rotate: expected a non-empty list of degrees from -360 to 360, got ['1e999']"),
    (["1e999*mixed4a:0"], "target: number 1e999 is too large (at most 1e6 in magnitude) at column 1 of '1e999*mixed4a:0'"),
    (["mixed4a:0/1e-9"], "target: weight 1e9 is too large (at most 1e6 in magnitude) at column 1 of 'mixed4a:0/1e-9'"),
    (["0*mixed4a:0"], "target: weight 0 is too small (at least 1e-6 in magnitude; a smaller one leaves the unit flat) at column 1 of '0*mixed4a:0'"),
    (["mixed4a:1 + 1e-300*mixed4a:0"], "target: weight 1e-300 is too small (at least 1e-6 in magnitude; a smaller one leaves the unit flat) at column 13 of 'mixed4a:1 + 1e-300*mixed4a:0'"),
    (["direction(mixed4a, [1, 1e999])"],
     "target: number 1e999 is too large (at most 1e6 in magnitude) at column 24 of 'direction(mixed4a, [1, 1e999])'"),
    (["direction(mixed4a, [0, -0.0])"],
     "target: a direction of all zeros points nowhere; give a vector with a non-zero entry at column 20 of 'direction(mixed4a, [0, -0.0])'"),
    (["direction(mixed4a, '{tmp}/zero.pt')"],
     "target direction(mixed4a, '{tmp}/zero.pt'): direction file {tmp}/zero.pt: all zeros, which point nowhere; expected a vector with a non-zero entry"),
    (["direction(mixed4a, '{tmp}/inf.npy')"],
     "target direction(mixed4a, '{tmp}/inf.npy'): direction file {tmp}/inf.npy: holds inf; expected finite numbers of magnitude at most 1e6"),
    # sizes checked before anything is expanded
    (["mixed4a:0-99999999"],
     "target: range 0-99999999 names 100000000 channels; a job renders at most 100000 units (split it into several jobs) at column 9 of 'mixed4a:0-99999999'"),
    (["mixed4a:0-99999999999999"], "target: channel 99999999999999 is too large (at most 99999999) at column 9 of 'mixed4a:0-99999999999999'"),
    (["mixed4a:0-99999", "mixed4a:100000-100001"],
     "target mixed4a:0-99999 mixed4a:100000-100001: 100002 channels of mixed4a; a job renders at most 100000 units (split it into several runs)"),
    (["direction(mixed4a, random:100000000)"],
     "target: random:100000000 names 100000000 directions; a job renders at most 100000 units (split it into several jobs) "
     "at column 27 of 'direction(mixed4a, random:100000000)'"),
    (["mixed4a:0", "--workers", "100000"], "--workers: expected a positive integer or auto (at most 256), got 100000"),
    (["mixed4a:0", "--batch-size", "100000"], "--batch-size: expected a positive integer or auto (at most 65536), got 100000"),
    # deep and long targets
    (["(" * 33 + "mixed4a:0" + ")" * 33],
     "target: parentheses nested more than 32 deep at column 33 of '" + "(" * 33 + "mixed4a:0" + ")" * 33 + "'"),
    (["(" * 1000 + "mixed4a:0" + ")" * 1000], "target: parentheses nested more than 32 deep at column 33 of '" + "(" * 200 + "'..."),
    (["mixed4a:0+" * 7000 + "mixed4a:0"],
     "target: 70009 characters, too long (at most 65536); put a long direction vector in a .npy file"),
    # digits of other scripts, which Python's int() accepts
    (["mixed4a:٣"], "target: expected channels like 97, 0-511 or 3,7,100-107; write digits as 0-9, not '٣' at column 9 of 'mixed4a:٣'"),
    (["mixed4a:１"], "target: expected channels like 97, 0-511 or 3,7,100-107; write digits as 0-9, not '１' at column 9 of 'mixed4a:１'"),
    (["mixed4a:0", "--steps", "٣"], "--steps: expected a positive integer, got '٣'; write digits as 0-9, not '٣'"),
    # pickles: refused in one line, with no advice to turn the safe loader off
    (["direction(mixed4a, '{tmp}/pickle.pt')"],
     "target direction(mixed4a, '{tmp}/pickle.pt'): direction file {tmp}/pickle.pt: not a tensor file fv can load safely "
     "(only tensors saved with torch.save are read; pickled objects are refused)"),
    (["mixed4a:0", "--weights", "{tmp}/pickle.pt"],
     "--weights {tmp}/pickle.pt: cannot read a state dict from this file (it is not a PyTorch checkpoint, or it holds pickled Python objects, which fv does not load)"),
    # the command line itself
    (["mixed4a:0", "--stesp", "3"], "No such option '--stesp'. (Did you mean one of: '--save-steps', '--steps', '--tokens'?) (see 'fv render --help')"),
    (["{tmp}/missing.yaml"], "{tmp}/missing.yaml: spec file not found"),
    ([], "Missing argument 'TARGET|SPEC.yaml...'. (see 'fv render --help')"),
]


@pytest.fixture
def tmp(tmp_path):
    """The test's folder, with the weights files and the stray file the cases name."""
    (tmp_path / "corrupt.pt").write_text("not a checkpoint\n")
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, tmp_path / "resnet18.pt")
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "resnet18.pt").read_bytes()[:4096])
    (tmp_path / "a-file").write_text("in the way\n")
    torch.save(torch.zeros(512), tmp_path / "zero.pt")
    numpy.save(tmp_path / "inf.npy", numpy.full(512, numpy.inf))
    with open(tmp_path / "pickle.pt", "wb") as file:
        pickle.dump({"a": 1}, file, protocol=4)  # torch warns about protocol 4 before refusing it
    return tmp_path


def check(tmp, args, message):
    before = sorted(tmp.rglob("*"))
    out = [] if any(a == "--out" for a in args) else ["--out", str(tmp / "out")]
    weights = [] if "--weights" in args else ["--weights", "random"]
    output = fv("render", *args, *weights, *out, code=2)
    assert output == f"fv: error: {message.format(tmp=tmp)}\n"
    assert sorted(tmp.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("text, message", SPEC_CASES)
def test_bad_spec(tmp, text, message):
    (tmp / "spec.yaml").write_text(text)
    check(tmp, [str(tmp / "spec.yaml")], message)


@pytest.mark.parametrize("args, message", CLI_CASES)
def test_bad_command_line(tmp, args, message):
    check(tmp, [a.format(tmp=tmp) for a in args], message)


def test_options_after_double_dash_are_named_not_read_as_targets():
    # `--` ends the options, so these would be targets: the line says so, and moves them before it
    # (`...`: the options already before `--`), before any model is loaded.
    output = fv("render", "--", "-mixed4a:0-3", "--weights", "random", "--steps", "32", code=2)
    assert output == (
        "fv: error: '--weights' after '--' is read as a target; put options before '--': "
        "fv render --weights random --steps 32 -- -mixed4a:0-3\n"
    )
    output = fv("render", "--size", "32", "--", "-mixed4a:0", "--no-decorrelate", "--out=my out", "mixed4b:1", code=2)
    assert output == (
        "fv: error: '--no-decorrelate' after '--' is read as a target; put options before '--': "
        "fv render ... --no-decorrelate '--out=my out' -- -mixed4a:0 mixed4b:1\n"
    )


def test_a_gpu_that_is_not_there(tmp):
    count = torch.cuda.device_count()
    if count:
        message = f"--device cuda:{count}: there are {count} CUDA devices (cuda:0 to cuda:{count - 1})"
    else:
        message = f"--device cuda:{count}: torch sees no CUDA GPU on this machine; use --device cpu or auto"
    check(tmp, ["mixed4a:0", "--device", f"cuda:{count}"], message)


def test_two_specs_that_disagree_on_a_run_setting(tmp):
    (tmp / "a.yaml").write_text("device: cpu\njobs: [{layer: mixed4a, channels: 0}]\n")
    (tmp / "b.yaml").write_text("device: auto\njobs: [{layer: mixed3a, channels: 0}]\n")
    check(tmp, [str(tmp / "a.yaml"), str(tmp / "b.yaml")], "{tmp}/b.yaml: sets device to 'auto', another spec to 'cpu'; pass --device")


@pytest.mark.parametrize("size, message", [
    ("0", "--size: expected a positive integer, got 0"),
    ("-5", "--size: expected a positive integer, got -5"),
    ("100000", "--size: expected a positive integer (at most 2048), got 100000"),
])
def test_fv_layers_checks_size_like_render(size, message):
    assert fv("layers", "--size", size, code=2) == f"fv: error: {message}\n"


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("# padding\n" * 110_000 + "steps: 1\nsize: 16\njobs: [{layer: mixed4a, channels: 0}]\n"),
     "spec file larger than 1048576 bytes (1 MiB); split it into several specs"),
    (lambda p: p.symlink_to("/dev/zero"), "not a regular file; expected a YAML spec file"),
])
def test_a_huge_or_endless_spec_is_not_read(tmp, make, message):
    make(tmp / "spec.yaml")
    check(tmp, [str(tmp / "spec.yaml")], f"{{tmp}}/spec.yaml: {message}")


def test_a_dry_run_needs_no_writable_folder(tmp, monkeypatch):
    """As root every folder is writable, so the test makes os.access say {tmp}/ro is not."""
    (tmp / "ro").mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if str(path).startswith(str(tmp / "ro")) else access(path, mode, **kw))
    args = ["mixed4a:0", "--out", str(tmp / "ro" / "out")]
    check(tmp, args, f"cannot write to output folder {tmp}/ro/out/googlenet/mixed4a: {tmp}/ro is not writable")
    output = fv("render", *args, "--weights", "random", "--dry-run")
    assert output == f"{tmp}/ro/out/googlenet/mixed4a: googlenet mixed4a:0: 1 unit, 0 already rendered, 1 to render\n"
    assert not (tmp / "ro" / "out").exists()


def test_a_pickle_is_refused_in_one_line_without_torchs_warning(tmp):
    """In a fresh process, where torch's warning about pickle protocol 4 would reach stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "fvcli", "render", f"direction(mixed4a, '{tmp}/pickle.pt')", "--weights", "random", "--dry-run"],
        capture_output=True, text=True, cwd=tmp, env={**os.environ, "PYTHONWARNINGS": "always"},
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "not a tensor file fv can load safely" in result.stderr
    assert "weights_only" not in result.stderr
