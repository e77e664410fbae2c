"""Nothing lost, nothing half-written, no traceback: failed writes (a full or read-only file system, too
long a name, an unwritable --out), user code that raises or exits, two runs in one folder, workers
whose parent is killed, a cut PNG on resume. Real processes, real files, a real tmpfs."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, fv
from fvcli.errors import FvError, WriteError
from fvcli.specs.requests import safe_component
from fvcli.run.locks import LOCK_NAME, FolderLocks
from fvcli.messages import plural
from fvcli.run.output import read_record
from fvcli.run.writer import Writer

FAST = ["--model", TINY, "--weights", "random", "--size", "32", "--dtype", "float32"]


def fv_process(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "fvcli", "render", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def fv_run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "fvcli", "render", *args], capture_output=True, text=True, timeout=timeout)


def one_error_line(stderr: str) -> str:
    """The run's single error line (progress lines aside); no traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("fv: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def wait_for(predicate, process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"not reached in {timeout} s; exit {process.poll()}")


def hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.fixture
def small_fs(tmp_path):
    """A real 64 KB tmpfs (tests run as root); its mount point, unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}); the full-disk tests need one")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


# ---- 1. a failed write is caught: one line, exit 3, finished units kept, a rerun finishes ----


def test_a_full_disk_stops_with_one_line_and_a_rerun_finishes(small_fs):
    command = ["conv2:0-15", *FAST, "--steps", "2", "--batch-size", "2", "--out", str(small_fs / "o")]
    done = fv_run(*command)
    folder = small_fs / "o" / "tiny_model.make" / "conv2"
    line = one_error_line(done.stderr)
    assert done.returncode == 3, done.stderr
    assert line.startswith(f"fv: error: cannot write {folder}/") and "No space left on device [Errno 28]" in line, line
    assert "running the same command again renders the rest" in line
    kept = sorted(folder.glob("conv2_*.png"))
    assert 0 < len(kept) < 16 and all(read_record(p) for p in kept)
    assert not hidden(folder)  # no temporary file, no lock left behind
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_fs)], check=True)
    done = fv_run(*command)
    assert done.returncode == 0, done.stderr
    assert f"{plural(len(kept), 'unit')} already rendered" in done.stderr and (folder / "grid.json").exists()


def test_a_file_system_turned_read_only_mid_run_stops_cleanly(small_fs):
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_fs)], check=True)
    command = ["conv2:0-5", *FAST, "--steps", "40", "--batch-size", "1", "--out", str(small_fs / "o")]
    folder = small_fs / "o" / "tiny_model.make" / "conv2"
    process = fv_process(*command)
    wait_for(lambda: len(list(folder.glob("conv2_*.png"))) >= 2, process)
    for _ in range(50):  # refused while a file is open for writing: between two writes, then
        if subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], capture_output=True).returncode == 0:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("cannot remount read-only")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 3, stderr
    assert "Read-only file system [Errno 30]" in one_error_line(stderr)
    kept = len(list(folder.glob("conv2_*.png")))
    subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    done = fv_run(*command)
    assert done.returncode == 0 and f"{kept} units already rendered" in done.stderr, done.stderr


def test_an_output_folder_that_cannot_be_written_is_bad_input():
    output = fv("render", "conv2:0", *FAST, "--steps", "1", "--out", "/proc/fv-test", code=2)
    assert output == "fv: error: cannot write to output folder /proc/fv-test/tiny_model.make/conv2: No such file or directory in /proc [Errno 2]\n"


def test_names_made_from_long_targets_are_bounded_and_short_ones_unchanged(tmp_path):
    values = ", ".join(f"0.{i:09d}" for i in range(1, 13))  # 12 channels of conv3: a 160-character name
    fv("render", f"direction(conv3, [{values}])", "conv3:0", *FAST, "--steps", "1", "--out", str(tmp_path))
    names = sorted(p.name for p in (tmp_path / "tiny_model.make").iterdir())
    assert names[0] == "conv3"  # short names are unchanged
    assert re.fullmatch(r"direction_conv3_1e-09_2e-09_[-0-9e_]+-[0-9a-f]{12}", names[1]) and len(names[1]) <= 80, names
    assert (tmp_path / "tiny_model.make" / names[1] / "grid.json").exists()
    assert safe_component("x" * 300) != safe_component("x" * 299) and len(safe_component("x" * 300)) <= 80


def test_the_writer_stops_at_its_first_error_and_raises_it_in_the_rendering_thread():
    written = []

    def fail():
        raise WriteError("out/x.png", OSError(28, "No space left on device"))

    with pytest.raises(WriteError, match=r"cannot write out/x.png: No space left on device \[Errno 28\]"):
        with Writer(depth=1) as writer:
            writer.submit(lambda: written.append(1))
            writer.submit(fail)
            writer.submit(lambda: written.append(3))  # skipped, or refused
            writer.drain()
    assert written == [1]


# ---- 2. user code is contained ----

BROKEN = """
import sys
import torch
from torch import nn

class Raises(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        raise ValueError("boom")

def make():
    return Raises()

def leaves():
    sys.exit(0)
"""


def test_errors_of_user_code_are_one_line_naming_the_model(tmp_path):
    factory = tmp_path / "x.py"
    factory.write_text(BROKEN)
    out = str(tmp_path / "o")
    assert fv("render", "conv:0-1", "--model", f"{factory}:make", "--weights", "random", "--out", out, code=2) == (
        f"fv: error: model {factory}:make: forward raised ValueError: boom\n"
    )
    assert fv("render", "conv:0", "--model", f"{factory}:leaves", "--weights", "random", "--out", out, code=2) == (
        f"fv: error: model {factory}:leaves: the factory called sys.exit(0)\n"
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script's deprecation notice
def test_a_torchscript_model_that_raises_is_one_line(tmp_path):
    import torch

    sys.path.insert(0, str(tmp_path))
    (tmp_path / "scripted_broken.py").write_text(BROKEN)
    try:
        import scripted_broken

        torch.jit.save(torch.jit.script(scripted_broken.make()), str(tmp_path / "bad.pt"))
    finally:
        sys.path.remove(str(tmp_path))
    output = fv("render", "output:0", "--model", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "o"), code=2)
    assert output == f"fv: error: target output:0: model {tmp_path / 'bad.pt'}: forward raised ValueError: boom\n"


# ---- 3. one run at a time in a job folder ----


def test_a_second_run_into_the_same_folder_exits_2_naming_the_first_and_a_killed_one_blocks_nothing(tmp_path):
    folder = tmp_path / "tiny_model.make" / "conv2"
    first = fv_process("conv2:0-15", *FAST, "--steps", "400", "--batch-size", "1", "--out", str(tmp_path))
    try:
        wait_for(lambda: (folder / LOCK_NAME).exists(), first)
        second = fv_run("conv2:0-15", *FAST, "--steps", "2", "--seed", "1", "--out", str(tmp_path))
        assert second.returncode == 2, second.stderr
        assert one_error_line(second.stderr) == (
            f"fv: error: another fv run (PID {first.pid}) is writing {folder}; wait for it to finish, or render into another --out"
        )
    finally:
        first.kill()  # kill -9: the kernel drops its lock
        first.wait()
    fv("render", "conv2:0-3", *FAST, "--steps", "2", "--seed", "1", "--out", str(tmp_path))  # its lock file blocks nothing
    assert not hidden(folder)


def test_shards_of_a_run_share_a_folder_but_not_with_a_whole_run_or_the_same_shard(tmp_path):
    folder = tmp_path / "job"
    with FolderLocks([folder], (0, 2)), FolderLocks([folder], (1, 2)):
        with pytest.raises(FvError, match=rf"another fv run \(PID {os.getpid()}\) is writing {folder}"):
            FolderLocks([folder], None).__enter__()
        with pytest.raises(FvError, match=r"is rendering shard 1/2 into"):
            FolderLocks([folder], (1, 2)).__enter__()
    assert not folder.exists()  # made for the locks, and empty again


# ---- 4. workers die with their parent ----


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_die_when_their_parent_is_killed(tmp_path):
    folder = tmp_path / "tiny_model.make" / "conv2"
    parent = fv_process("conv2:0-15", *FAST, "--steps", "400", "--batch-size", "1", "--workers", "2", "--out", str(tmp_path))
    wait_for(lambda: len(children_of(parent.pid)) >= 2 and folder.exists() and any(folder.glob("conv2_*.png")), parent)
    workers = children_of(parent.pid)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)], "workers outlived their parent"
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# ---- 5 and 6. resume verifies PNGs; a rerun with nothing to do says so ----


def test_a_cut_png_is_rendered_again_and_a_finished_job_says_all_units_already_rendered(tmp_path):
    command = ["render", "conv2:0-3", *FAST, "--steps", "2", "--batch-size", "1", "--out", str(tmp_path)]
    fv(*command)
    output = fv(*command)
    folder = tmp_path / "tiny_model.make" / "conv2"
    assert f"fv: {folder}: all 4 units of {TINY} conv2 already rendered -> {folder / 'grid.png'}" in output
    assert "units/s" not in output
    png = folder / "conv2_0002.png"
    whole = png.read_bytes()
    png.write_bytes(whole[:-12])  # cut just before the final IEND chunk
    assert read_record(png) is None
    output = fv(*command)
    assert "3 units already rendered" in output and png.read_bytes() == whole


def test_a_grid_label_of_forty_thousand_characters_is_cut_in_a_few_measurements():
    """An inline direction of a 2,048-channel layer is a one-unit target of ~20,000 characters, and
    its grid label was cut one character at a time (40,000: unfinished after 24 minutes)."""
    from PIL import Image

    from fvcli.run.output import _font, _fit, make_grid

    label = "direction(mixed4a, [" + ", ".join(["0.123456"] * 4000) + "])"
    assert len(label) > 40_000
    font = _font(10)
    cut = _fit(label, font, 92)
    assert cut.endswith("…") and font.getlength(cut) <= 92 and font.getlength(label[: len(cut)] + "…") > 92
    grid = make_grid([([Image.new("RGB", (96, 96))], label, "ok")], 96)
    assert grid.width >= 96


def test_a_layer_overwritten_by_a_later_in_place_relu_reads_its_own_output():
    """conv -> ReLU(inplace=True), as torchvision's VGG features.0/features.1: when a deeper layer
    is in the same forward pass, the ReLU used to overwrite the conv's captured output, so -0:0
    started from another value beside a unit of layer 2 than alone."""
    import torch
    from torch import nn

    import fvcli

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3), nn.ReLU())
    options = {"steps": 1, "size": 24, "weights": "random", "dtype": "float32", "pre_relu": "off"}
    alone = fvcli.render(model, "-0:0-3", **options).records
    beside = [r for job in fvcli.render(model, "-0:0-3", "2:0", **options).jobs for r in job.records if r["objective"].startswith("-0:")]
    assert [r["activation_start"] for r in alone] == [r["activation_start"] for r in beside]
    assert any(r["activation_start"] > 0 for r in alone)  # negative images of a conv that goes below 0
    assert isinstance(model[1], nn.ReLU) and model[1].inplace  # the caller's model is as it was


@pytest.mark.parametrize("dtype", ["half", "bfloat16", "double"])
def test_a_factory_in_another_float_type_renders_in_float32(tmp_path, dtype):
    """Its own weights and random ones (whose BatchNorm statistics are calibrated on float32 images
    before anything else runs: that pass failed on half weights), in fv render and fv layers."""
    factory = tmp_path / "other.py"
    factory.write_text(
        "import torch\nfrom torch import nn\n\ndef make():\n    torch.manual_seed(0)\n"
        f"    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3)).{dtype}()\n"
    )
    fv("layers", "--model", f"{factory}:make", "--size", "24")  # random weights
    for weights in ["default", "random"]:
        out = tmp_path / weights
        fv("render", "3:0", "--model", f"{factory}:make", "--weights", weights, "--size", "24", "--steps", "2", "--out", str(out), "-q")
        assert (out / "other.make" / "3" / "3_0000.png").is_file()


def test_sixteen_bit_grey_pngs_are_scaled_and_pixel_bombs_refused(tmp_path):
    """Issue 22, B4 and C8: mid grey 32768/65535 read as white (clipped at 255); a 118-byte PNG of
    1 x 20,000 pixels was resized to 224 x 4,480,000 (4.8 GB)."""
    import numpy
    from PIL import Image

    from fvcli.optvis.images import load_image

    grey = tmp_path / "grey16.png"
    Image.fromarray(numpy.full((40, 40), 32768, dtype=numpy.uint16)).save(grey)
    assert Image.open(grey).mode.startswith("I")
    pixels = load_image(grey, 32)
    assert pixels.shape == (3, 32, 32) and abs(float(pixels.mean()) - 0.5) < 0.01
    thin = tmp_path / "thin.png"
    Image.new("L", (1, 20_000)).save(thin)
    assert thin.stat().st_size < 2_000
    with pytest.raises(ValueError, match="sides differ at most 64 times"):
        load_image(thin, 224)
    message = fv("render", "relu3:0", "--model", TINY, "--weights", "random", "--size", "32", "--steps", "1", "--init", str(thin), "--out", str(tmp_path / "o"), code=2)
    assert "sides differ" in message and len(message.strip().splitlines()) == 1


FIXED_WITH_BATCHNORM = """import torch
from torch import nn

def make():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 5))
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    return model.eval(), {"mean": [0.5] * 3, "std": [0.25] * 3, "size": 16}
"""


def test_a_fixed_size_factory_renders_its_conv_layer_at_another_size_with_batchnorm_folded(tmp_path):
    factory = tmp_path / "fixed.py"
    factory.write_text(FIXED_WITH_BATCHNORM)
    # The ReLU after the BatchNorm at 32 px (the whole model runs at 16 only), then the logit (resized to 16 px).
    for target in ("2:0-1", "4:0"):
        fv("render", target, "--model", f"{factory}:make", "--steps", "2", "--size", "32", "--dtype", "float32", "--out", str(tmp_path / "o"))
        sidecar = json.loads((tmp_path / "o" / "fixed.make" / target[0] / "grid.json").read_text())
        assert sidecar["engine"]["batchnorms_folded"] == 1


def limited_memory():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))  # a file read whole would fail, not fill the machine


def test_files_of_a_hundred_gigabytes_are_refused_from_their_size_before_reading(tmp_path):
    import numpy

    for name in ("sparse.png", "sparse.npy", "sparse.pt"):
        with open(tmp_path / name, "wb") as file:
            file.truncate(100 * 2**30)  # sparse: no disk used
    header = __import__("io").BytesIO()
    numpy.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    (tmp_path / "liar.npy").write_bytes(header.getvalue() + bytes(16))  # a small file whose header says 4 TB
    numpy.save(tmp_path / "cut.npy", numpy.ones(16, numpy.float32))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:-4])
    cases = [
        (["--init", str(tmp_path / "sparse.png"), "conv2:0"], "--init", "a file of 107,374,182,400 bytes; fv reads at most"),
        (["--param", "maco", "--spectrum", str(tmp_path / "sparse.pt"), "conv2:0"], "--spectrum", "107374182400 bytes"),
        ([f"caricature(conv2, '{tmp_path / 'sparse.png'}')"], "photo", "a file of 107,374,182,400 bytes"),
        ([f"direction(conv2, '{tmp_path / 'sparse.npy'}')"], "direction file", "a file of 107,374,182,400 bytes"),
        ([f"direction(conv2, '{tmp_path / 'sparse.pt'}')"], "direction file", "a file of 107,374,182,400 bytes"),
        ([f"direction(conv2, '{tmp_path / 'liar.npy'}')"], "direction file", "1,000,000,000,000 values; at most"),
        ([f"direction(conv2, '{tmp_path / 'cut.npy'}')"], "direction file", "truncated or damaged"),
    ]
    # One process for all of them (torch loads once), its address space limited.
    script = (
        "import json, sys\nfrom fvcli.cli import cli\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    code = cli.main(args=args, prog_name='fv', standalone_mode=False)\n"
        "    print(f'exit {code}', file=sys.stderr, flush=True)\n"
    )
    argv = [["render", *args, *FAST, "--steps", "1", "--out", str(tmp_path / "o")] for args, _, _ in cases]
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(argv)], capture_output=True, text=True, timeout=120, preexec_fn=limited_memory
    )
    outputs = re.split(r"^exit (\d+)\n", done.stderr, flags=re.M)
    assert len(outputs) == 2 * len(cases) + 1, done.stderr
    for (args, what, reason), stderr, code in zip(cases, outputs[0::2], outputs[1::2]):
        line = one_error_line(stderr)
        assert code == "2" and what in line and reason in line, (args, stderr)
    assert not (tmp_path / "o").exists()


def test_damaged_shard_manifests_are_one_line_and_exit_2(tmp_path):
    """Issue 22, E14: keys missing, wrong types and values, a name leading out of the folder, NaN,
    and JSON nested deeper than Python's recursion: `fv merge` says which file and why."""
    fv("render", "conv2:0-3", *FAST, "--steps", "1", "--shard", "0/2", "--out", str(tmp_path / "shard"))
    folder = tmp_path / "shard" / "tiny_model.make" / "conv2"
    good = json.loads((folder / "grid.shard-0-of-2.json").read_text())
    damaged = {
        "no units": json.dumps({k: v for k, v in good.items() if k != "units"}),
        "units a number": json.dumps({**good, "units": 5}),
        "a unit without hash": json.dumps({**good, "units": [{"label": "0", "images": ["conv2_0000.png"]}]}),
        "shard as text": json.dumps({**good, "shard": "0/2"}),
        "negative size": json.dumps({**good, "size": -3}),
        "a PNG outside": json.dumps({**good, "units": [{**good["units"][0], "images": ["../../x.png"]}]}),
        "no timing": json.dumps({**good, "sidecar": {**good["sidecar"], "timing": {}}}),
        "a list": "[1, 2]",
        "a unit twice": json.dumps({**good, "units": [good["units"][0], *good["units"]]}),
        "NaN": json.dumps(good).replace('"size": 32', '"size": NaN'),
        "deep": "[" * 100_000 + "]" * 100_000,
    }
    for what, text in damaged.items():
        (folder / "grid.shard-0-of-2.json").write_text(text)
        output = fv("merge", str(tmp_path / "shard"), code=2)
        assert "grid.shard-0-of-2.json is damaged" in output and len(output.strip().splitlines()) == 1, (what, output)
        assert not (folder / "grid.json").exists()


def test_deep_or_nan_json_of_fvs_own_files_is_damaged_not_a_traceback(tmp_path, monkeypatch):
    """Issue 22, E14: an atlas over a grid.json nested 100,000 deep skips it in one line; a tuning
    cache nested that deep or holding NaN is ignored (measured again); a factory whose normalization
    holds a NaN is refused before anything renders."""
    job = tmp_path / "out" / "m" / "l"
    job.mkdir(parents=True)
    (job / "grid.json").write_text("[" * 100_000 + "]" * 100_000)
    output = fv("atlas", str(tmp_path / "out"), code=2)
    assert "unreadable grid.json (nested too deeply)" in output

    from fvcli.run import tuning

    monkeypatch.setenv("FV_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    steps = []
    for text in ("[" * 100_000 + "]" * 100_000, '{"k": {"dtype": "float32", "seconds": {"float32": NaN}}}', '{"k": {"dtype": "float32", "seconds": 7}}'):
        (tmp_path / "cache" / tuning.CACHE_FILE).write_text(text)
        chosen = tuning._choose_dtype("k", steps.append, torch.device("cpu"))
        assert chosen["remembered"] is False and json.dumps(chosen, allow_nan=False)
    assert len(steps) == 3 * 4  # measured each time: two rounds of both dtypes

    factory = tmp_path / "nan.py"
    factory.write_text(
        "from torch import nn\n\ndef make():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), {'mean': [0.5, float('nan'), 0.5], 'std': [0.25] * 3}\n"
    )
    output = fv("render", "1:0", "--model", f"{factory}:make", "--steps", "1", "--size", "32", "--out", str(tmp_path / "o"), code=2)
    assert "the factory's preprocessing has mean [0.5, nan, 0.5]" in output
    assert not (tmp_path / "o").exists()


def test_bad_input_found_up_front_leaves_nothing(tmp_path):
    """Issue 22, F15: each is one line and exit 2 before anything is written: an --out name longer
    than the file system allows (was exit 3, mid-run), a folder of no readable image for fv examples
    (left examples/.state.pt), a jitter larger than the canvas (every unit failed, exit 1), and a
    pickle given as --spectrum (torch's advice to turn weights_only off was passed on)."""
    long_out = tmp_path / ("a" * 300)
    line = fv("render", "conv2:0", *FAST, "--steps", "1", "--out", str(long_out), code=2)
    assert "a name in it is longer than 255 bytes" in line and len(line.strip().splitlines()) == 1
    deep_out = tmp_path.joinpath(*["b" * 200] * 21)
    assert "its path is longer than" in fv("render", "conv2:0", *FAST, "--steps", "1", "--out", str(deep_out), code=2)

    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_text("not a picture")
    (images / "b.jpg").write_bytes(b"\xff\xd8 cut")
    output = fv("examples", "conv2:0-1", "conv3:0", "--model", TINY, "--weights", "random", "--images", str(images), "--out", str(tmp_path / "ex"), code=2)
    assert "none of the 2 image files" in output and len(output.strip().splitlines()) == 1
    assert not (tmp_path / "ex").exists()

    output = fv("render", "conv2:0", *FAST, "--transforms", "pad=2,jitter=37", "--out", str(tmp_path / "j"), code=2)
    assert "--transforms: jitter=37 crops 37 px from a canvas of 36 px" in output
    fv("render", "conv2:0", *FAST, "--steps", "1", "--transforms", "pad=2,jitter=35", "--out", str(tmp_path / "j"))

    import datetime

    pickled = tmp_path / "pickled.pt"
    torch.save({"format": datetime.date(2025, 1, 1)}, pickled)  # a class torch's safe loader refuses
    output = fv("render", "conv2:0", *FAST, "--param", "maco", "--spectrum", str(pickled), "--out", str(tmp_path / "s"), code=2)
    assert "pickled Python objects, which fv does not load" in output and "weights_only" not in output
    assert len(output.strip().splitlines()) == 1


class _FunctionalInPlace(torch.nn.Module):
    """A forward that rectifies conv1's output in place with F.relu_, as hand-written models do."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3)

    def forward(self, x):
        x = torch.nn.functional.relu_(self.conv1(x))
        return self.conv2(x)


def test_a_layer_changed_by_a_functional_in_place_op_after_it_is_captured_as_its_own():
    """Review of B3: prepare() turns off ReLU(inplace=True) modules, not a forward's F.relu_(x); a
    layer read together with a deeper one must still hold its own output, not the ReLU's."""
    from fvcli.models.capture import forward_to

    torch.manual_seed(0)
    model = _FunctionalInPlace().eval()
    x = torch.randn(2, 3, 12, 12, requires_grad=True)
    alone = forward_to(model, x, ["conv1"])["conv1"]  # the pass stops at conv1, before the F.relu_
    assert (alone < 0).any()
    for _ in range(2):  # found overwritten once, then copied from the start
        both = forward_to(model, x, ["conv1", "conv2"])
        assert torch.equal(both["conv1"], alone)
    both["conv1"].sum().backward()  # the copy is in the graph
    assert x.grad is not None and x.grad.abs().sum() > 0
