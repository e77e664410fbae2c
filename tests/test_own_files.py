"""fv deletes or overwrites only files it can prove it wrote, never through a link out of its
folder (fvcli.owned), and reads its own files back bounded and regular (fvcli.files.read_back).
Real files, real links and FIFOs, a real tiny atlas."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import atlas_job, fv


# This program's own peak RSS in KiB: /proc's VmHWM counts from its exec, where ru_maxrss keeps the
# peak of the process it was forked from (a pytest worker holding 2 GB of models) across exec.
PEAK_KIB = "next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM'))"

def test_assembling_an_atlas_removes_only_its_own_strips_and_writes_none_through_a_link(atlas_out, tmp_path):
    from fvcli.atlas.activation_image import assemble_folder

    out = atlas_out
    job = atlas_job(out)
    strips = job / "atlas-samples"
    (strips / "cell_099_099.png").write_bytes(b"a user's picture")  # no record of fv's
    shutil.copy(strips / "cell_000_000.png", strips / "cell_009_009.png")  # fv's strip, of a cell gone
    said = []
    assert assemble_folder(job, said.append) is not None
    assert (strips / "cell_099_099.png").read_bytes() == b"a user's picture"
    assert not (strips / "cell_009_009.png").exists()
    # A user's file where fv would write a strip is left as it is, and said
    (strips / "cell_000_000.png").write_bytes(b"mine")
    said.clear()
    assemble_folder(job, said.append)
    assert (strips / "cell_000_000.png").read_bytes() == b"mine" and any("that fv did not write (cell_000_000.png) left as they are" in s for s in said), said
    # atlas-samples, a link out of the job folder: nothing written or removed there
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "cell_005_005.png").write_bytes(b"theirs")
    shutil.copy(strips / "cell_000_001.png", elsewhere / "cell_007_007.png")  # even an fv strip, out there
    shutil.rmtree(strips)
    strips.symlink_to(elsewhere)
    said.clear()
    assert assemble_folder(job, said.append) is not None
    assert sorted(p.name for p in elsewhere.iterdir()) == ["cell_005_005.png", "cell_007_007.png"]
    assert any("atlas-samples leads out of the job folder" in s for s in said), said


def test_fv_atlas_removes_only_its_own_pages_and_refuses_to_replace_a_users(atlas_out):
    out = atlas_out
    job, plain = atlas_job(out), out / "tiny_model.make" / "conv3"
    (job / "units" / "my-notes.html").write_text("<p>notes</p>")
    (plain / "atlas.html").write_text("<p>a user's page in a job without atlas.json</p>")
    stale = job / "units" / "gone.html"
    shutil.copy(job / "units" / sorted(p.name for p in (job / "units").glob("*.html"))[0], stale)  # fv's page, no unit
    said = fv("atlas", str(atlas_out))
    assert "1 removed" in said and not stale.exists()
    assert (job / "units" / "my-notes.html").read_text() == "<p>notes</p>"
    assert (plain / "atlas.html").read_text().startswith("<p>a user's page")
    (out / "index.html").write_text("my own index")
    before = {p: p.read_bytes() for p in out.rglob("*.html")}
    said = fv("atlas", str(atlas_out), code=2)
    assert said.count("\n") == 1 and f"{out / 'index.html'} is not a file fv atlas wrote" in said, said
    assert {p: p.read_bytes() for p in out.rglob("*.html")} == before


def test_merge_and_the_stale_png_sweep_remove_only_fvs_own(atlas_out):
    out = atlas_out
    from fvcli.run.merge import remove_manifests
    from fvcli.run.output import remove_unlisted

    plain = out / "tiny_model.make" / "conv3"
    (plain / "grid.shard-1-of-2.json").write_text('{"mine": true}')
    (plain / "grid.shard-2-of-2.json").write_text('{"manifest_version": 1}')
    remove_manifests(plain)
    assert (plain / "grid.shard-1-of-2.json").exists() and not (plain / "grid.shard-2-of-2.json").exists()
    # A PNG whose record is valid JSON but no object: neither removed nor a traceback
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    for name, text in (("list.png", "[]"), ("text.png", '"conv3:0"'), ("odd.png", '{"objective": ["x"], "image": 5}')):
        info = PngInfo()
        info.add_text("fv-unit", text)
        Image.new("RGB", (4, 4)).save(plain / name, pnginfo=info)
    assert remove_unlisted(plain, []) == []
    link = plain / "linked.png"
    link.symlink_to(plain / "conv3_0000.png")
    objective = json.loads((plain / "grid.json").read_text())["units"][0]["objective"]
    remove_unlisted(plain, [{"objective": objective, "image": "renamed.png"}])  # conv3_0000.png: fv's, of this unit, unlisted
    assert link.is_symlink() and not (plain / "conv3_0000.png").exists()


def test_atlas_settings_read_back_bounded_and_regular(atlas_out):
    """write_settings read the old atlas-settings.json with a plain read: a FIFO hung the rerun,
    a sparse file of 2.5 GB was read whole."""
    job = atlas_job(atlas_out)
    settings = job / "atlas-settings.json"
    text = settings.read_text()
    settings.unlink()
    with open(settings, "wb") as file:
        file.truncate(2_500_000_000)
    script = (
        "import sys, json; from pathlib import Path; from fvcli.atlas.activation_image import write_settings\n"
        "write_settings(Path(sys.argv[1]), json.loads(sys.argv[2]))\n"
        f"print({PEAK_KIB})"
    )
    run = subprocess.run([sys.executable, "-c", script, str(job), text], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and int(run.stdout) < 2_000_000, run  # KiB: importing torch takes 0.7 GB, reading the file 2.5 GB more
    assert settings.read_text().strip() == text.strip()
    settings.unlink()
    os.mkfifo(settings)
    try:
        run = subprocess.run([sys.executable, "-c", script, str(job), text], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("a FIFO in atlas-settings.json's place was waited on")
    assert "is not a regular file" in run.stderr and "WriteError" in run.stderr  # refused, not waited on


def test_the_tuning_cache_is_read_back_bounded(tmp_path):
    """tuning.json was opened as a regular file but read whole: a sparse file of 3 GB took 3 GB."""
    cache = tmp_path / "cache"
    cache.mkdir()
    with open(cache / "tuning.json", "wb") as file:
        file.truncate(3_000_000_000)
    script = (
        "import resource; from fvcli.run.tuning import remembered\n"
        "assert remembered('key') is None\n"
        f"print({PEAK_KIB})"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "FV_CACHE_DIR": str(cache)})
    assert run.returncode == 0 and int(run.stdout) < 2_000_000, run  # KiB: torch's import is 0.7 GB of it
