"""Re-running renders only what is missing: each PNG carries its unit's record and settings hash."""

import json

from conftest import QUICK, fv
from fvcli.output import read_record

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
