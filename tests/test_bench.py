"""The benchmark script keeps working: one JSON line with the fields BENCHMARKS.md reports
(no timing is asserted; performance is measured by running the script, not by tests)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


MTCNN = "facenet_pytorch.models.mtcnn"
ONET = ["--model", f"{MTCNN}:ONet", "--weights", "default", "--size", "48", "--normalize", "0.5,0.5,0.5/0.502,0.502,0.502"]
LUCENT = BENCH.parent / ".lucent" / "lucent"


def bench(*args: str) -> dict:
    done = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("layer, channels, images, seen", [("dense6_1", "1", 2, 48), ("prelu3", "0-1", 4, 60)])
def test_bench_renders_a_trained_network_from_a_factory(layer, channels, images, seen):
    """MTCNN's ONet ships in facenet-pytorch's wheel: a factory, its own weights, its normalization.
    Its face output sits behind a Linear layer that fixes the input size, so the transformed images
    are resized back to 48 px, as fv render does; its convolutions see the transforms' 60 px."""
    pytest.importorskip("facenet_pytorch")
    result = bench(
        *ONET, "--layer", layer, "--channels", channels, "--repeat", "2", "--steps", "2", "--device", "cpu", "--dtype", "float32",
        "--prelu-probe",
    )
    config = result["config"]
    assert config["weights_identity"] == "factory default" and config["normalization"] == [[0.5] * 3, [0.502] * 3]
    assert config["units"] == images // 2 and config["images"] == images  # --repeat 2
    assert config["canvas"] == 60 and config["model_input_size"] == seen
    assert result["fv"]["wall_s"] > 0 and result["fv"]["model_flops_per_image_step"] > 1e6
    probe = result["prelu_probe"]  # torch's PReLU backward against fv's: the same images
    assert probe["images_identical"] and probe["wall_ratio"] > 0 and probe["cpu_ratio"] > 0 and len(probe["rounds"]) == 1


def test_bench_judges_fv_and_lucent_alike_and_by_other_networks():
    pytest.importorskip("facenet_pytorch")
    if not LUCENT.is_dir():
        pytest.skip("Lucent is not installed (bash benchmarks/install_lucent.sh)")
    judges = ["--cross-judge", f"{MTCNN}:RNet", "24", "softmax5_1", "1", "--cross-judge", f"{MTCNN}:PNet", "12", "softmax4_1", "1"]
    result = bench(
        *ONET, "--layer", "dense6_1", "--channels", "1", "--repeat", "2", "--steps", "2", "--device", "cpu", "--dtype", "float32",
        "--vs-lucent", "--rounds", "2", *judges,
    )
    assert len(result["rounds"]) == 2 and all(r["fv_s"] > 0 and r["lucent_batched_s"] > 0 and r["fv_cpu_s"] > 0 for r in result["rounds"])
    assert result["ratios"]["fv_vs_lucent_batched"] > 0 and result["lucent"]["one_at_a_time_s"] > 0
    quality = result["quality"]
    assert quality["units"] == 2 and quality["rounds_judged"] == 2
    others = quality["other_networks"]
    assert set(others) == {f"{MTCNN}:RNet@24 softmax5_1:1", f"{MTCNN}:PNet@12 softmax4_1:1"}
    for judged in others.values():  # face probabilities
        assert 0 <= judged["fv_mean"] <= 1 and 0 <= judged["lucent_mean"] <= 1 and 0 <= judged["units_fv_at_least_lucent"] <= 2
