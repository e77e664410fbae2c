"""Bad input: exit status 2, exactly one line naming what is wrong and where, and nothing written.

Every kind of bad input the batch-robustness issue lists has its exact message here. `{tmp}` stands
for the test's folder; spec files are written there as spec.yaml.
"""

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
]

CLI_CASES = [
    # unknown model, layer, objective, device
    (["mixed4a:0", "--model", "alexnett"],
     "unknown model 'alexnett'; did you mean alexnet, googlenet, resnet50? (`fv models` lists them, or use a factory FILE.py:FUNC)"),
    (["mixed4z:0"],
     "target mixed4z:0: unknown layer 'mixed4z' for model googlenet; did you mean mixed4e, mixed4d, mixed4c? (`fv layers --model googlenet` lists them)"),
    (["mixed4a:0", "--objective", "nueron"], "--objective: expected one of channel, neuron, got 'nueron'; did you mean neuron?"),
    (["nueron(mixed4a:0)"],
     "target: unknown objective nueron(); did you mean neuron()? (known: channel(), deepdream(), direction(), direction_neuron(), "
     "interpolate(), layer(), neuron(), logit:, probability:) at column 1 of 'nueron(mixed4a:0)'"),
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
    # the command line itself
    (["mixed4a:0", "--stesp", "3"], "No such option '--stesp'. (Did you mean one of: '--size', '--steps', '--tokens'?) (see 'fv render --help')"),
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_that_is_not_there(tmp):
    check(tmp, ["mixed4a:0", "--device", "cuda:0"], "--device cuda:0: torch sees no CUDA GPU on this machine; use --device cpu or auto")


def test_two_specs_that_disagree_on_a_run_setting(tmp):
    (tmp / "a.yaml").write_text("device: cpu\njobs: [{layer: mixed4a, channels: 0}]\n")
    (tmp / "b.yaml").write_text("device: auto\njobs: [{layer: mixed3a, channels: 0}]\n")
    check(tmp, [str(tmp / "a.yaml"), str(tmp / "b.yaml")], "{tmp}/b.yaml: sets device to 'auto', another spec to 'cpu'; pass --device")
