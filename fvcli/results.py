"""What the Python API gives back: the files a run wrote, read into memory, with the images and
records as data. A notebook shows a result as its picture; `save` writes the same bytes again."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fvcli.errors import FvError
from fvcli.files import parse_json, read_back
from fvcli.messages import plural

if TYPE_CHECKING:
    from PIL import Image


def _open(data: bytes) -> Image.Image:
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _write_files(out: str | Path, files: dict[str, bytes]) -> None:
    from fvcli.files import atomic_write

    for relative, data in files.items():
        path = Path(out) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda temporary, data=data: temporary.write_bytes(data))


def _read_json(path: Path) -> dict:
    """A sidecar this call wrote, read back as fv reads its own JSON (one line if it was damaged since)."""
    try:
        data = parse_json(read_back(path))
    except (OSError, ValueError) as error:
        raise FvError(f"{path}: cannot be read back ({error})") from None
    if not isinstance(data, dict):
        raise FvError(f"{path}: cannot be read back (not a JSON object)")
    return data


def _read_files(out: Path, folder: Path, names: list[str]) -> dict[str, bytes]:
    """The named files of a job folder that stay inside `out` (fvcli.atlas.discovery.inside)."""
    from fvcli.atlas.discovery import inside

    relative = folder.relative_to(out).as_posix()
    return {f"{relative}/{name}": read_back(folder / name) for name in names if inside(out, folder, name) and (folder / name).is_file()}


# Results print as one short line (what `print(result)` and a notebook's text show): the records and
# sidecars they hold run to thousands of characters, and `.records` / `.sidecar` give those.

_STATUSES = ("ok", "dead", "flat", "failed")  # in the order a summary lists them; others follow


def _units(records: list[dict]) -> str:
    """'6 units: 5 ok, 1 failed'."""
    counts: dict[str, int] = {}
    for record in records:
        status = record.get("status", "?")
        counts[status] = counts.get(status, 0) + 1
    order = [s for s in _STATUSES if s in counts] + sorted(s for s in counts if s not in _STATUSES)
    listed = ", ".join(f"{counts[s]} {s}" for s in order)
    return plural(len(records), "unit") + (f": {listed}" if listed else "")


def _models(sidecars: list[dict]) -> str:
    names = list(dict.fromkeys(str(sidecar.get("model", {}).get("name")) for sidecar in sidecars))
    return ", ".join(names) if names else "nothing rendered"


def _where(out: Path | None) -> str:
    return f"out={out}" if out is not None else "in memory"


# ---- fv render ----


@dataclass
class JobResult:
    """One job's output, read back from the files `fv render` writes.

    `files` holds every file's bytes by its path relative to the output folder
    (MODEL/LAYER/grid.png, ... and the step images, alpha maps and upscaled images the records
    list), so that `save` writes exactly those bytes.
    """

    folder: str  # relative to the output folder: MODEL/LAYER, or NAME for a named spec job
    sidecar: dict  # grid.json
    files: dict[str, bytes] = field(repr=False)

    def __repr__(self) -> str:
        return f"JobResult({self.folder}, {_units(self.records)})"

    @property
    def records(self) -> list[dict]:
        """Per unit, as grid.json lists them: label, objective, image, status, values, seed..."""
        return self.sidecar.get("units", [])

    @property
    def grid(self) -> Image.Image:
        """The job's grid.png."""
        return _open(self.files[f"{self.folder}/grid.png"])

    @property
    def images(self) -> list[Any]:
        """One PIL image per unit; a list of them for a unit of several images (--diversity,
        interpolation frames); None for a unit that failed."""
        from fvcli.run.unit_files import UnitFiles

        images = []
        for record in self.records:
            loaded = [_open(self.files[f"{self.folder}/{name}"]) for name in UnitFiles.listed(record).images]
            images.append(None if not loaded else loaded[0] if len(loaded) == 1 and "images" not in record else loaded)
        return images

    @classmethod
    def read(cls, out: Path, folder: Path) -> JobResult | None:
        """The job written in `folder` under the output folder `out`; None while it is not whole
        (a shard's job waiting for the others)."""
        from fvcli.run.unit_files import UnitFiles

        sidecar_path = folder / "grid.json"
        if not sidecar_path.is_file():
            return None
        sidecar = _read_json(sidecar_path)
        units = sidecar.get("units", [])
        files = [UnitFiles.listed(unit) for unit in units]
        names = ["grid.png", "grid.json", *(name for f in files for name in (*f.images, *f.extras))]
        return cls(folder.relative_to(out).as_posix(), sidecar, _read_files(out, folder, names))


@dataclass
class Result:
    """What `render` made: one JobResult per job. `grid`, `images`, `records` and `sidecar` are
    those of the first job (most renders have one); `jobs` lists them all."""

    jobs: list[JobResult]
    exit_code: int = 0  # as `fv render` would exit: 0, or 1 when some units failed
    out: Path | None = None  # the output folder it was written to; None: a temporary one, removed (see save)

    def __repr__(self) -> str:
        records = [record for job in self.jobs for record in job.records]
        return (
            f"Result({_models([job.sidecar for job in self.jobs])}, {plural(len(self.jobs), 'job')}, "
            f"{_units(records)}, {_where(self.out)})"
        )

    # A result of no job (a dry run, or a shard whose jobs wait for others) has no records, images
    # or sidecar, and no grid to show: an FvError says so, not an IndexError.

    @property
    def grid(self) -> Image.Image:
        if not self.jobs:
            raise FvError("this result has no grid: nothing was rendered (a dry run, or a shard whose jobs wait for other shards)")
        return self.jobs[0].grid

    @property
    def images(self) -> list[Any]:
        return self.jobs[0].images if self.jobs else []

    @property
    def records(self) -> list[dict]:
        return self.jobs[0].records if self.jobs else []

    @property
    def sidecar(self) -> dict:
        return self.jobs[0].sidecar if self.jobs else {}

    def save(self, out: str | Path) -> list[Path]:
        """Write the files `fv render --out OUT` writes (unit PNGs with their records, grid.png,
        grid.json) under `out`, byte for byte, removing the PNGs an earlier run wrote there that
        these jobs do not list, as `fv render` does; return the job folders."""
        from fvcli.run.output import remove_unlisted

        for job in self.jobs:
            folder = Path(out) / job.folder
            if folder.is_dir():  # what an earlier run wrote there and this sidecar does not list
                remove_unlisted(folder, job.records)
            _write_files(out, job.files)
        return [Path(out) / job.folder for job in self.jobs]

    def _repr_png_(self) -> bytes | None:
        """A notebook shows a result as its grid (none after a dry run)."""
        return self.jobs[0].files[f"{self.jobs[0].folder}/grid.png"] if self.jobs else None


# ---- fv examples ----


@dataclass
class LayerExamples:
    """The dataset examples of one layer, read back from what `fv examples` writes
    (MODEL/LAYER/examples/: a top and a bottom strip per channel, and examples.json)."""

    folder: str  # relative to the output folder: MODEL/LAYER/examples
    sidecar: dict  # examples.json
    files: dict[str, bytes] = field(repr=False)

    def __repr__(self) -> str:
        return f"LayerExamples({self.folder}, {plural(len(self.records), 'channel')}, k={self.sidecar.get('k')})"

    @property
    def records(self) -> list[dict]:
        """Per channel: channel, label, and its `top` and `bottom` images, each a dict of path
        (relative to the images folder), value (the extreme over positions), mean, position (in
        the layer's grid) and box (the crop, in the original image's pixels)."""
        return self.sidecar["units"]

    @property
    def images_folder(self) -> Path:
        return Path(self.sidecar["images"]["folder"])

    def strip(self, channel: int, bottom: bool = False) -> Image.Image:
        """The channel's strip of crops: those that excite it most, or (`bottom`) suppress it most."""
        record = self._record(channel)
        return _open(self.files[f"{self.folder}/{record['negative_strip' if bottom else 'strip']}"])

    def crops(self, channel: int, bottom: bool = False, size: int | None = None) -> list[Image.Image]:
        """The channel's examples as separate crops of the original images, `size` px a side
        (default: the --crop of the run), read from the images folder."""
        from PIL import Image

        from fvcli.optvis.images import open_upright

        side = size or self.sidecar["crop"]
        crops = []
        for entry in self._record(channel)["bottom" if bottom else "top"]:
            original = open_upright(self.images_folder / entry["path"])
            crops.append(original.crop(tuple(entry["box"])).resize((side, side), Image.Resampling.LANCZOS))
        return crops

    def _record(self, channel: int) -> dict:
        for record in self.records:
            if record["channel"] == channel:
                return record
        have = ", ".join(str(r["channel"]) for r in self.records[:8])
        raise KeyError(f"channel {channel} has no examples here (channels {have}{'...' if len(self.records) > 8 else ''})")

    @classmethod
    def read(cls, out: Path, folder: Path) -> LayerExamples:
        sidecar = _read_json(folder / "examples.json")
        names = ["examples.json", *(name for unit in sidecar["units"] for name in (unit["strip"], unit["negative_strip"]))]
        return cls(folder.relative_to(out).as_posix(), sidecar, _read_files(out, folder, names))


@dataclass
class Examples:
    """What `examples` collected: one LayerExamples per layer. `records`, `strip` and `crops` are
    those of the first layer (most calls name one); `layers` lists them all."""

    layers: list[LayerExamples]
    out: Path | None = None  # the output folder it was written to; None: a temporary one, removed (see save)

    def __repr__(self) -> str:
        channels = sum(len(layer.records) for layer in self.layers)
        return (
            f"Examples({_models([layer.sidecar for layer in self.layers])}, {plural(len(self.layers), 'layer')}, "
            f"{plural(channels, 'channel')}, {_where(self.out)})"
        )

    @property
    def records(self) -> list[dict]:
        return self.layers[0].records

    def strip(self, channel: int, bottom: bool = False) -> Image.Image:
        return self.layers[0].strip(channel, bottom)

    def crops(self, channel: int, bottom: bool = False, size: int | None = None) -> list[Image.Image]:
        return self.layers[0].crops(channel, bottom, size)

    def save(self, out: str | Path) -> list[Path]:
        """Write the files `fv examples --out OUT` writes under `out`, byte for byte."""
        for layer in self.layers:
            _write_files(out, layer.files)
        return [Path(out) / layer.folder for layer in self.layers]

    def _repr_png_(self) -> bytes | None:
        """A notebook shows the first layer's top strips, one row per channel (at most 16)."""
        from PIL import Image

        if not self.layers:
            return None
        strips = [self.layers[0].strip(record["channel"]) for record in self.records[:16]]
        sheet = Image.new("RGB", (max(s.width for s in strips), sum(s.height + 2 for s in strips)), (255, 255, 255))
        y = 0
        for strip in strips:
            sheet.paste(strip, (0, y))
            y += strip.height + 2
        buffer = io.BytesIO()
        sheet.save(buffer, format="PNG")
        return buffer.getvalue()


@dataclass
class Atlas:
    """An activation atlas as data (`fvcli.activation_atlas`): the picture, its cells and icons,
    and the layout of every sample. A notebook shows it as its picture.

    .image     the atlas (PIL): each icon in its cell of the grid
    .cells     per kept cell, as atlas.json lists it (row, column, count, top_channels, samples,
               objective...), with `vector`: the cell's average activation (a list of floats)
    .icons     one PIL image per cell, in the order of .cells
    .layout    (N, 2) numpy array: each sample's place in [0, 1]^2 (x, y)
    .samples   {"files": [...], "image": (N,) index into files, "position": (N, 2) [y, x] on the layer}
    .sidecar   atlas.json
    .out       the folder written (out=), or None when it was a temporary one
    """

    sidecar: dict
    files: dict[str, bytes] = field(repr=False)  # relative path -> bytes, as written
    layout: Any = field(repr=False)
    samples: dict = field(repr=False)
    averages: Any = field(repr=False)
    folder: str = ""  # the job folder, relative to out
    out: Path | None = None

    def __repr__(self) -> str:
        grid = self.sidecar.get("grid", {})
        where = self.out if self.out is not None else "in memory"
        return f"Atlas({self.sidecar.get('layer')}, {grid.get('rows')}x{grid.get('columns')} grid, {plural(len(self.cells), 'cell')}, {plural(len(self.layout), 'sample')}, {where})"

    @property
    def image(self) -> Image.Image:
        return _open(self.files[f"{self.folder}/{self.sidecar['grid']['image']}"])

    @property
    def cells(self) -> list[dict]:
        return [{**cell, "vector": [float(v) for v in self.averages[i]]} for i, cell in enumerate(self.sidecar["cells"])]

    @property
    def icons(self) -> list[Image.Image]:
        return [_open(self.files[f"{self.folder}/{cell['icon']}"]) for cell in self.sidecar["cells"]]

    def save(self, out: str | Path) -> list[Path]:
        """Write the atlas's files (icons, grid, atlas.png, atlas.json, layout, sample strips) under `out`."""
        _write_files(out, self.files)
        return [Path(out) / name for name in self.files]

    def _repr_png_(self) -> bytes | None:
        return self.files.get(f"{self.folder}/{self.sidecar['grid']['image']}")

    @classmethod
    def read(cls, out: Path, folder: Path) -> Atlas | None:
        import numpy as np

        from fvcli.atlas.discovery import check_atlas_record

        try:
            sidecar = parse_json(read_back(folder / "atlas.json"))
            check_atlas_record(sidecar)
        except (OSError, ValueError):
            return None
        job = JobResult.read(out, folder)
        if job is None:
            return None
        # The files fv's records list, never every file under the folder: a user's 900 MB file
        # there is neither read into memory nor copied by save().
        cells = sidecar["cells"]
        listed = [sidecar["grid"]["image"], "atlas.json", *(c["icon"] for c in cells if c.get("icon")), *(c["samples_strip"] for c in cells)]
        listed += [name for name in (sidecar.get("layout_file"), sidecar.get("cells_file"), "atlas-settings.json") if isinstance(name, str)]
        files = {**job.files, **_read_files(out, folder, listed)}
        with np.load(io.BytesIO(read_back(folder / sidecar["layout_file"])), allow_pickle=False) as data:
            layout, averages = data["layout"], data["averages"]
            samples = {"files": [str(f) for f in data["files"]], "image": data["image"], "position": data["position"]}
        return cls(sidecar, files, layout, samples, averages, folder.relative_to(out).as_posix())
