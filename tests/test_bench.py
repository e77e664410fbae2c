"""The benchmark script keeps working: one JSON line with the fields BENCHMARKS.md reports
(no timing is asserted; performance is measured by running the script, not by tests)."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


def test_bench_prints_one_json_line_with_its_measurements():
    done = subprocess.run(
        [sys.executable, str(BENCH), "--units", "2", "--steps", "2", "--size", "48", "--device", "cpu", "--dtype", "float32"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["config"]["units"] == 2 and result["dtype"] == "float32"
    fv = result["fv"]
    assert fv["wall_s"] > 0 and fv["image_steps_per_s"] > 0 and fv["peak_memory_mb"] > 0
    assert fv["model_flops_per_image_step"] > 1e7  # GoogLeNet to mixed4a, forward and backward
    assert fv["batchnorms_folded"] > 0 and fv["peak_fraction"] is None  # a CPU has no listed peak


def test_bench_measures_fvs_own_work_per_step_apart_from_the_model():
    done = subprocess.run(
        [sys.executable, str(BENCH), "--overhead", "--units", "16", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    overhead = json.loads(done.stdout)["overhead"]
    assert overhead["units"] == 16 and overhead["canvas"] == 20  # 8 px, standard transforms
    for key in ("ms_per_step_standard_transforms", "ms_per_step_plain_pad", "ms_per_step_model_alone", "ms_per_step_transform_draws"):
        assert overhead[key] > 0


def test_bench_compares_parameterizations_side_by_side():
    done = subprocess.run(
        [sys.executable, str(BENCH), "--params", "--units", "2", "--steps", "2", "--size", "48", "--device", "cpu", "--dtype", "float32"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    params = json.loads(done.stdout)["params"]
    assert set(params["table"]) == {"fourier", "maco", "cppn"} and params["units"] == 2
    assert {name: row["lr"] for name, row in params["table"].items()} == {"fourier": 0.05, "maco": 0.1, "cppn": 0.002}  # their defaults
    assert all(row["ms_per_step"] > 0 and row["units_risen"] <= 2 for row in params["table"].values())
    assert set(params["ratios"]) == {"maco_vs_fourier", "cppn_vs_fourier"}
