"""What round 3's reproductions left (issue 29, class G): crafted tensors in the files fv loads, a
model on the meta device, NUL bytes in paths, and a dry run's result. Each is one line and exit 2
(an FvError in the Python API), never a traceback. Real files written with torch.save."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY, fv

ODD = f"{Path(__file__).parent / 'odd_models.py'}"
RUN = ["--model", TINY, "--weights", "random", "--size", "32", "--steps", "1"]


def crafted(kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    if kind == "expanded":  # one value on disk, stride 0 over the whole shape
        return torch.ones((1,) * len(shape)).expand(*shape)
    if kind == "meta":
        return torch.empty(shape, device="meta")
    if kind == "sparse":
        return torch.ones(shape).to_sparse()
    return torch.ones(shape, dtype=torch.complex64)


def one_line(said: str) -> str:
    assert said.count("\n") == 1 and "Traceback" not in said, said
    return said


@pytest.mark.parametrize("kind", ["expanded", "meta", "sparse", "complex"])
def test_crafted_tensors_in_spectrum_and_direction_files_are_one_line(tmp_path, kind):
    """An expanded spectrum ran the allocator out ("can't allocate"); a meta or sparse tensor
    raised RuntimeError or a dispatcher traceback."""
    from fvcli.optvis.spectrum import FORMAT, VERSION

    huge = (3, 65_536, 32_769) if kind == "expanded" else (3, 32, 17)
    spectrum = tmp_path / "spectrum.pt"
    torch.save({"format": FORMAT, "version": VERSION, "magnitude": crafted(kind, huge), "colour": "rgb", "count": 1, "folder": "x"}, spectrum)
    said = one_line(fv("render", "conv3:0", *RUN, "--param", "maco", "--spectrum", str(spectrum), "--out", str(tmp_path / "o"), code=2))
    assert f"--spectrum {spectrum}" in said, said
    direction = tmp_path / "direction.pt"
    torch.save(crafted(kind, (4, 12) if kind != "expanded" else (2**20, 12)), direction)
    said = one_line(fv("render", f"direction(conv3, '{direction}')", *RUN, "--out", str(tmp_path / "o"), code=2))
    assert f"direction file {direction}" in said, said
    assert not (tmp_path / "o").exists()


def test_every_field_of_a_spectrum_file_is_checked(tmp_path):
    from fvcli.optvis.spectrum import FORMAT, VERSION

    spectrum = tmp_path / "spectrum.pt"
    for count in ("abc", -1, 2.5):
        torch.save({"format": FORMAT, "version": VERSION, "magnitude": torch.ones(3, 32, 17), "colour": "rgb", "count": count}, spectrum)
        said = one_line(fv("render", "conv3:0", *RUN, "--param", "maco", "--spectrum", str(spectrum), "--out", str(tmp_path / "o"), code=2))
        assert "its count" in said, said


def test_a_model_on_the_meta_device_is_refused_in_one_line(tmp_path):
    """fv render and fvcli.render raised NotImplementedError ("Cannot copy out of meta tensor");
    fv layers listed it with exit 0."""
    import fvcli
    from fvcli.errors import FvError

    message = "its conv.weight is on the meta device (a shape without values)"
    for weights in ("default", "random"):
        said = one_line(fv("render", "conv:0", "--model", f"{ODD}:make_meta", "--weights", weights, "--size", "32", "--out", str(tmp_path / "o"), code=2))
        assert message in said, said
    assert message in one_line(fv("layers", "--model", f"{ODD}:make_meta", code=2))
    sys.path.insert(0, str(Path(__file__).parent))
    from odd_models import make_meta

    with pytest.raises(FvError, match="on the meta device"):
        fvcli.render(make_meta(), "conv:0", steps=1, size=32, quiet=True)


def test_a_nul_byte_in_a_path_is_one_line(tmp_path):
    """ValueError "embedded null byte" from out: or spectrum: in a spec, and out= in the API."""
    import fvcli
    from fvcli.errors import FvError

    spec = tmp_path / "spec.yaml"
    for key, value in (("out", f'"{tmp_path}/a\\0b"'), ("spectrum", f'"{tmp_path}/s\\0.pt"')):
        spec.write_text(f"model: {TINY}\nweights: random\nparam: maco\n{key}: {value}\njobs:\n  - target: conv3:0\n")
        said = one_line(fv("render", str(spec), "--size", "32", code=2))
        assert f"{key}: expected text without a NUL character" in said, said
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_model import make

    with pytest.raises(FvError, match="without a NUL character"):
        fvcli.render(make(), "conv3:0", out=f"{tmp_path}/x\0y", steps=1, size=32, quiet=True)


def test_a_dry_runs_result_has_no_records_and_says_so_for_its_grid():
    """Reading a dry run's records raised IndexError."""
    import fvcli
    from fvcli.errors import FvError

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_model import make

    result = fvcli.render(make(), "conv3:0-1", steps=1, size=32, quiet=True, dry_run=True)
    assert result.records == [] and result.images == [] and result.sidecar == {}
    with pytest.raises(FvError, match="nothing was rendered"):
        result.grid
