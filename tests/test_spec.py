"""Spec files: a valid spec becomes jobs with the right precedence; bad specs fail in one line."""

import textwrap

import pytest

from fvcli.errors import FvError
from fvcli.specs.spec import load_spec


def write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_spec_jobs_and_precedence(tmp_path):
    path = write(
        tmp_path,
        """
        model: googlenet
        weights: random
        out: outs
        steps: 100
        size: 64
        device: cpu
        jobs:
          - layer: mixed4a
            channels: 0-3
          - name: some
            layer: mixed4b
            channels: [3, 7, 10-12]
            steps: 50
            lr: 0.1
        """,
    )
    jobs, run = load_spec(path, {"size": 32})  # --size 32 on the command line
    assert run == {"out": "outs", "device": "cpu"}
    first, second = jobs
    assert (first.target.describe(), first.name) == ("mixed4a:0-3", None)
    assert (first.settings.steps, first.settings.size, first.settings.weights) == (100, 32, "random")
    assert (second.target.describe(), second.name) == ("mixed4b:3,7,10-12", "some")
    assert (second.settings.steps, second.settings.lr, second.settings.size) == (50, 0.1, 32)
    assert str(first.folder) == "outs/googlenet/mixed4a"
    assert str(second.folder) == "outs/some"


def test_missing_channels_means_every_channel(tmp_path):
    jobs, _ = load_spec(write(tmp_path, "jobs: [{layer: mixed4a}]"), {})
    assert jobs[0].target.simple.channels is None
    assert jobs[0].settings.steps == 512 and jobs[0].settings.model == "googlenet"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "spec.yaml: the spec is empty; expected a mapping with a 'jobs:' list"),
        ("- 1\n- 2", "spec.yaml: expected a mapping of settings and a 'jobs:' list, got list"),
        ("stpes: 5\njobs: [{layer: a}]", "spec.yaml: unknown key 'stpes'; did you mean 'steps'?"),
        ("steps: 5", "spec.yaml: no 'jobs:' list; expected at least one job with a 'layer:'"),
        ("jobs: []", "spec.yaml: jobs: expected a non-empty list of jobs, got []"),
        ("steps: many\njobs: [{layer: a}]", "spec.yaml: steps: expected a positive integer, got 'many'"),
        ("steps: 0\njobs: [{layer: a}]", "spec.yaml: steps: expected a positive integer, got 0"),
        ("size: 100000\njobs: [{layer: a}]", "spec.yaml: size: expected a positive integer (at most 2048), got 100000"),
        ("lr: -0.1\njobs: [{layer: a}]", "spec.yaml: lr: expected a positive number, got -0.1"),
        ("param: pixels\njobs: [{layer: a}]", "spec.yaml: param: expected one of fourier, pixel, lowres, laplacian, maco, cppn, got 'pixels'; did you mean pixel?"),
        ("jobs: [{layer: a, channels: 5-2}]", "spec.yaml: jobs[0].channels: reversed range 5-2; write 2-5"),
        ("jobs: [{layer: a, channels: x}]", "spec.yaml: jobs[0].channels: expected channels like 97, 0-511 or 3,7,100-107, got 'x'"),
        ("jobs: [{layer: a}, {channels: 3}]", "spec.yaml: jobs[1]: missing 'layer:' (the layer to visualize, e.g. mixed4a) or 'target:'"),
        ("jobs: [{target: 'a:1 +'}]", "spec.yaml: jobs[0].target: expected an objective, found the end at column 6 of 'a:1 +'"),
        ("jobs: [{target: 'a:1', layer: a}]", "spec.yaml: jobs[0]: give either 'target:' or 'layer:' and 'channels:', not both"),
        ("jobs: [{layer: a, chanels: 3}]", "spec.yaml: jobs[0]: unknown key 'chanels'; did you mean 'channels'?"),
        ("jobs: [{layer: a, device: cpu}]", "spec.yaml: jobs[0].device: 'device' applies to the whole run; set it at the top of the spec"),
        ("jobs: [{layer: a, name: ../up}]", "spec.yaml: jobs[0].name: expected a folder name of letters, digits"),
        ("jobs: [{layer: a, steps: 2.5}]", "spec.yaml: jobs[0].steps: expected a positive integer, got 2.5"),
        ("jobs: [5]", "spec.yaml: jobs[0]: expected a mapping with a 'layer:', got 5"),
        ("jobs: [{layer: a}\nsteps: 3", "spec.yaml: line 2, column 1: invalid YAML"),
    ],
)
def test_bad_specs_fail_in_one_line(tmp_path, text, message):
    with pytest.raises(FvError) as error:
        load_spec(write(tmp_path, text), {})
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(str(tmp_path / message.split(":")[0]))
    assert message.split(": ", 1)[1] in text


def test_missing_spec_file(tmp_path):
    with pytest.raises(FvError, match="nope.yaml: spec file not found"):
        load_spec(tmp_path / "nope.yaml", {})


def test_fft_is_another_name_for_fourier(tmp_path):
    jobs, _ = load_spec(write(tmp_path, "param: fft\njobs: [{layer: a}]"), {})
    assert jobs[0].settings.param == "fourier"


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    """A 1 KB spec whose aliases nest 9 deep holds 9^9 values once expanded (it took 279 s and
    6.7 GB when an error message quoted it)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 9)}]" for k in range(1, 9)]
    lines += [f"steps: [{', '.join(['*a8'] * 9)}]", "jobs: [{layer: conv2, channels: 0}]"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(FvError, match=r"aliases \(\*name\) expand to more than 100,000 values"):
        load_spec(path, {})


def test_yaml_merge_keys_and_anchors_under_x_keys(tmp_path):
    path = write(
        tmp_path,
        """
        x-small: &small {steps: 8, size: 48}
        model: googlenet
        jobs:
          - {<<: *small, layer: mixed4a, channels: 0}
          - {<<: *small, layer: mixed4a, channels: 1, steps: 16}   # its own key wins over the merged one
        """,
    )
    jobs, _ = load_spec(path, {})
    assert [(j.settings.steps, j.settings.size) for j in jobs] == [(8, 48), (16, 48)]
