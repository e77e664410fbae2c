"""Promises kept whatever happened before (issue 29, class E): a resumed sidecar is the
uninterrupted run's, a dry run refuses what the real run refuses, and a read-only OUT is bad input
for fv atlas. Real runs, real files, a real read-only tmpfs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import SMALL_ATLAS, TINY, atlas_job, fv

TINY_RUN = ["--model", TINY, "--weights", "random", "--size", "32", "--steps", "4", "--batch-size", "2", "-q"]


def untimed(path: Path) -> dict:
    record = json.loads(path.read_text())
    record.pop("timing")
    return record


def test_a_sidecar_written_on_resume_is_the_uninterrupted_runs(tmp_path, small_atlas, atlas_out):
    """A kill after the last unit's PNG but before grid.json (the same files as grid.json removed):
    the resumed grid.json dropped engine.dtype and emptied engine.compile.why."""
    args = ["render", "conv3:0-3", *TINY_RUN, "--out", str(tmp_path)]
    fv(*args)
    sidecar = tmp_path / "tiny_model.make" / "conv3" / "grid.json"
    whole = untimed(sidecar)
    assert whole["engine"]["dtype"] and whole["engine"]["compile"]["why"]
    sidecar.unlink()
    fv(*args)
    assert untimed(sidecar) == whole
    # Half the units rendered again (their PNGs gone), half restored
    for png in sorted(sidecar.parent.glob("conv3_000[23].png")):
        png.unlink()
    sidecar.unlink()
    fv(*args)
    assert untimed(sidecar) == whole
    # The same at the end of an activation atlas's run
    sidecar = atlas_job(atlas_out) / "grid.json"
    whole = untimed(sidecar)
    sidecar.unlink()
    fv("render", *SMALL_ATLAS, "--images", str(small_atlas.parent / "photos"), "--out", str(atlas_out))
    assert untimed(sidecar) == whole


def test_a_dry_run_refuses_two_jobs_of_one_folder_as_the_real_run_does(tmp_path, small_atlas):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"model: {TINY}\nweights: random\nsize: 32\nsteps: 2\nout: {tmp_path / 'out'}\njobs:\n"
        f"  - kind: activation_atlas\n    name: same\n    layer: conv3\n    images: {small_atlas.parent / 'photos'}\n"
        "    samples: 4\n    grid: 2\n  - name: same\n    target: conv3:0-1\n"
    )
    for dry in (["--dry-run"], []):
        said = fv("render", str(spec), *dry, code=2)
        assert "jobs[1] and" in said and "would both write" in said and said.count("\n") == 1, said
    assert not (tmp_path / "out").exists()


@pytest.fixture
def read_only_out(tmp_path, small_atlas):
    """small_atlas's OUT on a real tmpfs, remounted read-only (tests run as root, for whom a
    folder's permissions are no barrier)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")
    try:
        subprocess.run(["cp", "-a", str(small_atlas), str(mount / "out")], check=True)
        (mount / "out" / "atlas.css").unlink()  # so that fv atlas has something to write
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount / "out"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_fv_atlas_on_a_read_only_out_is_one_line_and_exit_2(read_only_out):
    """It exited 3 naming atlas.css: WriteError is not an OSError, and was not caught."""
    said = fv("atlas", str(read_only_out), code=2)
    assert said.count("\n") == 1 and f"cannot write the atlas into {read_only_out}: Read-only file system" in said, said
