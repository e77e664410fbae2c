"""Runs split across processes: torchrun ranks and separately run shards end with the files of one run."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import TINY, fv

# Batches of one unit: every unit's arithmetic is then the same in any process, so files compare
# byte for byte (a unit's random state never depends on its batch or shard; see test_fast_paths).
ARGS = ["conv2:0-5", "conv3:0-3", "--model", TINY, "--weights", "random", "--steps", "4", "--size", "32", "--batch-size", "1"]
FOLDERS = ["tiny_model.make/conv2", "tiny_model.make/conv3"]


def files(out):
    """Every file under `out` by relative path: PNG bytes, and sidecars without their timing."""
    found = {}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name == "grid.json":
                data = json.loads(data)
                data.pop("timing")
            found[str(path.relative_to(out))] = data
    return found


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    fv("render", *ARGS, "--out", str(out), "--quiet")
    return files(out)


def test_torchrun_ranks_render_their_shards_and_rank_0_assembles_the_grids(tmp_path, single):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "fvcli", "render", *ARGS, "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert done.returncode == 0, done.stderr
    for folder in FOLDERS:
        assert f"{tmp_path / folder}: merged shards 0/2, 1/2" in done.stderr
    assert files(tmp_path) == single  # no manifests left, every PNG and sidecar as from one process
    sidecar = json.loads((tmp_path / FOLDERS[0] / "grid.json").read_text())
    assert sidecar["timing"]["shards"] == 2 and sidecar["timing"]["batch_sizes"] == [1]
    assert sidecar["timing"]["compile_seconds"] == 0  # the shards' timing fields survive assembly


def test_worker_processes_split_the_units_and_the_parent_assembles_them(tmp_path, single):
    done = subprocess.run(
        [sys.executable, "-m", "fvcli", "render", *ARGS, "--workers", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("fv: 2 worker processes on cpu\n")
    assert files(tmp_path) == single


def test_merge_assembles_shards_rendered_on_different_machines(tmp_path, single):
    # Two SLURM array tasks, each writing its own copy of the output folder, then gathered.
    for task in ("0", "1"):
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": task, "SLURM_ARRAY_TASK_COUNT": "2"}
        done = subprocess.run(
            [sys.executable, "-m", "fvcli", "render", *ARGS, "--out", str(tmp_path / task)],
            capture_output=True, text=True, timeout=300, env=env,
        )
        assert done.returncode == 0, done.stderr
        assert f"shard {task}/2 done; 2 jobs wait for other shards' units" in done.stderr
        assert f"'fv merge {tmp_path / task}' assembles their grids" in done.stderr
    shutil.copytree(tmp_path / "1", tmp_path / "0", dirs_exist_ok=True)
    out = tmp_path / "0"
    assert sorted(p.name for p in (out / FOLDERS[0]).glob("grid*")) == ["grid.shard-0-of-2.json", "grid.shard-1-of-2.json"]

    output = fv("merge", str(out))
    assert output.splitlines() == [
        f"fv: {out / folder}: merged shards 0/2, 1/2 -> {out / folder / 'grid.png'}" for folder in FOLDERS
    ]
    assert files(out) == single
    assert fv("merge", str(out)) == f"fv: nothing to merge in {out}: no shard manifests (grid.shard-I-of-N.json) under it\n"


def test_merge_lists_missing_units_and_writes_nothing_until_every_shard_is_done(tmp_path):
    fv("render", *ARGS, "--out", str(tmp_path), "--shard", "1/3", "--quiet")
    output = fv("merge", str(tmp_path), code=1)
    folder = tmp_path / FOLDERS[0]
    assert f"fv: {folder}: not merged yet: 4 units missing (0, 2, 3, 5); shards seen: 1/3" in output
    assert not (folder / "grid.png").exists() and not (folder / "grid.json").exists()
    assert (folder / "grid.shard-1-of-3.json").exists()

    for shard in ("0/3", "2/3"):
        fv("render", *ARGS, "--out", str(tmp_path), "--shard", shard, "--quiet")
    # The third shard found the others' units in place: it completed the jobs and removed the manifests.
    assert (folder / "grid.png").exists() and not list(folder.glob("grid.shard-*"))


def test_merge_keeps_the_record_of_a_failed_unit_and_exits_1(tmp_path):
    broken = ["broken:0-2", "--model", TINY.replace(":make", ":make_broken"), "--steps", "4", "--size", "16"]
    fv("render", *broken, "--out", str(tmp_path / "a"), "--shard", "0/2", "--quiet")
    fv("render", *broken, "--out", str(tmp_path / "b"), "--shard", "1/2", "--quiet", code=1)  # unit 1 fails
    shutil.copytree(tmp_path / "b", tmp_path / "a", dirs_exist_ok=True)
    folder = tmp_path / "a" / "tiny_model.make_broken" / "broken"
    assert fv("merge", str(tmp_path / "a"), code=1).endswith(f"merged shards 0/2, 1/2; 1 failed -> {folder / 'grid.png'}\n")
    units = json.loads((folder / "grid.json").read_text())["units"]
    assert [u["status"] for u in units] == ["dead", "failed", "ok"]
    assert units[1]["error"] == "the objective became NaN or infinite at step 1"


def test_merge_refuses_shards_of_runs_with_different_settings(tmp_path):
    fv("render", *ARGS, "--out", str(tmp_path / "a"), "--shard", "0/2", "--quiet")
    fv("render", *ARGS, "--seed", "1", "--out", str(tmp_path / "b"), "--shard", "1/2", "--quiet")
    shutil.copytree(tmp_path / "b", tmp_path / "a", dirs_exist_ok=True)
    output = fv("merge", str(tmp_path / "a"), code=1)
    assert "not merged: its manifests come from runs with different settings" in output
    assert not (tmp_path / "a" / FOLDERS[0] / "grid.png").exists()


def test_merge_of_a_missing_folder_is_bad_input(tmp_path):
    assert fv("merge", str(tmp_path / "nope"), code=2) == (
        f"fv: error: {tmp_path / 'nope'}: no such folder; expected the --out folder of sharded runs\n"
    )


def test_merge_counts_a_unit_whose_step_image_is_missing_as_missing(tmp_path):
    # A unit is whole only with every file its record lists (here --save-steps' step images), the
    # rule the runner's resume follows too: merging must not assemble a job around a lost file.
    args = ["conv2:0-1", "--model", TINY, "--weights", "random", "--steps", "4", "--size", "32", "--save-steps", "2"]
    fv("render", *args, "--out", str(tmp_path), "--shard", "0/2", "--quiet")
    fv("render", *args, "--out", str(tmp_path), "--shard", "1/2", "--quiet")
    folder = tmp_path / FOLDERS[0]
    assert (folder / "grid.png").exists()  # the second shard completed the job
    for name in ("grid.png", "grid.json", "conv2_0001.step2.png"):
        (folder / name).unlink()
    fv("render", *args, "--out", str(tmp_path), "--shard", "0/2", "--quiet")  # leaves its manifest again
    output = fv("merge", str(tmp_path), code=1)
    assert f"fv: {folder}: not merged yet: 1 unit missing (1)" in output
    assert not (folder / "grid.json").exists()
