"""Re-running renders only what is missing: each PNG carries its unit's record and settings hash."""

import json

from conftest import QUICK, TINY, fv
from fvcli.run.output import read_record
from fvcli.run.unit_files import listed_names

TARGET = "mixed3a:0-3"


def sidecar_without_timing(folder):
    data = json.loads((folder / "grid.json").read_text())
    data.pop("timing")
    return data


def test_a_rerun_keeps_what_is_rendered_and_renders_what_is_missing(tmp_path):
    out = tmp_path / "out"
    fv("render", TARGET, *QUICK, "--out", str(out))
    folder = out / "googlenet" / "mixed3a"
    first = {p.name: p.read_bytes() for p in folder.glob("mixed3a_*.png")}
    record = read_record(folder / "mixed3a_0002.png")
    assert record["objective"] == "mixed3a:2" and len(record["hash"]) == 64 and record["status"] in ("ok", "dead")

    output = fv("render", TARGET, *QUICK, "--out", str(out))
    assert "4 units already rendered with these settings are kept" in output
    assert {p.name: p.read_bytes() for p in folder.glob("mixed3a_*.png")} == first

    before = read_record(folder / "mixed3a_0001.png")
    (folder / "mixed3a_0001.png").unlink()
    output = fv("render", TARGET, *QUICK, "--out", str(out))
    assert "3 units already rendered" in output
    # Rendered again from the same seed and settings (alone now, so equal up to float rounding).
    assert read_record(folder / "mixed3a_0001.png")["hash"] == before["hash"]
    for name in ("mixed3a_0000.png", "mixed3a_0002.png", "mixed3a_0003.png"):
        assert (folder / name).read_bytes() == first[name]


def test_changed_settings_or_force_render_again(tmp_path):
    out = tmp_path / "out"
    fv("render", TARGET, *QUICK, "--out", str(out))
    assert "already rendered" not in fv("render", TARGET, *QUICK, "--seed", "1", "--out", str(out))
    assert "already rendered" not in fv("render", TARGET, *QUICK, "--seed", "1", "--out", str(out), "--force")


def test_a_rerun_with_other_settings_leaves_only_what_its_grid_lists_and_the_users_own_files(tmp_path):
    cppn = ["--model", TINY, "--weights", "random", "--steps", "4", "--size", "16", "--param", "cppn", "--out", str(tmp_path)]
    fv("render", "conv2:0-2", *cppn, "--cppn-upscale", "2", "--save-steps", "2", "--alpha-map", "--diversity", "2")
    folder = tmp_path / "tiny_model.make" / "conv2"
    assert {"conv2_0000_0.x2.png", "conv2_0000_1.step2.png", "conv2_0002_1_alpha.png"} <= {p.name for p in folder.iterdir()}
    (folder / "notes.txt").write_text("seed 0 looked best")
    (folder / "conv2_0000_0.png").rename(folder / "conv2_0000_0.kept.png")  # an fv image, renamed by its user
    (folder / "mine.png").write_bytes((folder / "grid.png").read_bytes())  # a PNG without fv's record

    channel_2 = {p.name for p in folder.glob("conv2_0002*")}
    output = fv("render", "conv2:0-1", *cppn)  # one channel fewer, one image a unit, no extra files
    assert "removed 15 files of an earlier run that this job no longer lists (conv2_0000_0.step2.png, " in output
    listed = listed_names(json.loads((folder / "grid.json").read_text())["units"])
    assert listed == {"conv2_0000.png", "conv2_0001.png"}
    left = {p.name for p in folder.iterdir()}
    # channel 2 is not part of this run: a layer rendered in chunks into one folder keeps every chunk
    assert len(channel_2) == 8 and left == listed | channel_2 | {"grid.png", "grid.json", "notes.txt", "conv2_0000_0.kept.png", "mine.png"}, left


def test_a_resumed_run_ends_with_the_grid_and_sidecar_of_an_uninterrupted_one(tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    fv("render", TARGET, *QUICK, "--out", str(whole))
    fv("render", "mixed3a:0-1", *QUICK, "--out", str(resumed))  # as if stopped halfway
    fv("render", TARGET, *QUICK, "--out", str(resumed))
    a, b = whole / "googlenet" / "mixed3a", resumed / "googlenet" / "mixed3a"
    assert (a / "grid.png").read_bytes() == (b / "grid.png").read_bytes()
    left, right = sidecar_without_timing(a), sidecar_without_timing(b)
    left["job"]["origin"] = right["job"]["origin"] = None
    assert left == right


def test_shards_are_disjoint_and_together_complete_the_run(tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    folder = out / "googlenet" / "mixed3a"
    first = fv("render", "mixed3a:0-4", *QUICK, "--out", str(out), "--shard", "0/2")
    assert sorted(p.name for p in folder.glob("mixed3a_*.png")) == ["mixed3a_0000.png", "mixed3a_0002.png", "mixed3a_0004.png"]
    assert "shard 0/2 done; 1 job waits for other shards' units" in first and not (folder / "grid.json").exists()
    fv("render", "mixed3a:0-4", *QUICK, "--out", str(out), "--shard", "1/2")  # completes the job: writes its grid
    sidecar = json.loads((folder / "grid.json").read_text())
    assert [u["channel"] for u in sidecar["units"]] == [0, 1, 2, 3, 4] and all(u["image"] for u in sidecar["units"])
    # Under a SLURM job array, each task takes its own slice.
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"}
    done = subprocess.run([sys.executable, "-m", "fvcli", "render", "mixed3a:0-5", *QUICK, "--out", str(tmp_path / "s"), "--dry-run"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.strip().endswith("6 units, 0 already rendered, 2 to render in shard 1/3"), done.stdout + done.stderr


def test_a_malformed_shard_is_bad_input(tmp_path):
    assert fv("render", TARGET, *QUICK, "--shard", "2/2", "--out", str(tmp_path), code=2) == (
        "fv: error: --shard: expected I/N with 0 <= I < N, such as 0/4, got '2/2'\n"
    )
