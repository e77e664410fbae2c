"""Assembling jobs that were rendered in shards (`--shard`, SLURM job arrays, torchrun ranks).

A shard that leaves a job incomplete writes a manifest beside the unit PNGs it rendered: the job's
sidecar as far as this shard knows it, each unit's image names and the hash its PNGs must carry. When
every unit's PNGs carry their hash, `fv merge OUT` writes the job's grid.png and grid.json from the
records inside the PNGs, so the result is the one a single process would have written, and removes
the manifests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fvcli.files import parse_json, read_back
from fvcli.owned import remove_own
from fvcli.run.output import read_record, remove_unlisted, write_grid, write_json
from fvcli.run.sidecar import combined
from fvcli.run.unit_files import UnitFiles
from fvcli.specs.limits import MAX_SIZE

MANIFEST_VERSION = 1
_MANIFEST = re.compile(r"grid\.shard-(\d+)-of-(\d+)\.json", re.ASCII)


def manifest_name(shard: tuple[int, int]) -> str:
    return "grid.shard-{}-of-{}.json".format(*shard)


def manifests(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("grid.shard-*-of-*.json") if _MANIFEST.fullmatch(p.name))


def remove_manifests(folder: Path) -> None:
    for path in manifests(folder):
        remove_own(path, folder, _own_manifest)


def _own_manifest(path: Path, data: bytes) -> bool:
    """A manifest fv wrote: a JSON object with its version (fvcli.owned)."""
    try:
        record = parse_json(data)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("manifest_version") == MANIFEST_VERSION


def write_manifest(folder: Path, shard: tuple[int, int], size: int, units: list[dict], sidecar: dict) -> None:
    """`units`: per unit of the job, in grid order, its label, image names and expected hash."""
    manifest = {"manifest_version": MANIFEST_VERSION, "shard": list(shard), "size": size, "units": units, "sidecar": sidecar}
    write_json(manifest, folder / manifest_name(shard))


@dataclass
class Merge:
    """What merging one job folder found."""

    folder: Path
    shards: list[str]  # the manifests' shard names, "0/2"
    missing: list[str] = field(default_factory=list)  # labels of units whose PNGs are not there yet
    failed: int = 0
    removed: list[str] = field(default_factory=list)  # files of an earlier run the merged sidecar does not list
    problem: str | None = None  # manifests that cannot be merged, and why
    damaged: bool = False  # the problem is a manifest that is not one fv wrote: bad input (exit 2)


def merge_folder(folder: Path) -> Merge:
    """Assemble one job folder from its manifests and unit PNGs, when every unit is there."""
    loaded = []
    for path in manifests(folder):
        try:
            data = parse_json(read_back(path))
            _check_manifest(data)
            loaded.append(data)
        except (OSError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            return Merge(folder, [], problem=f"{path.name} is damaged ({reason}); render that shard again", damaged=True)
    result = Merge(folder, ["{}/{}".format(*m["shard"]) for m in loaded])
    hashes = {tuple(unit["hash"] for unit in m["units"]) for m in loaded}
    if len(hashes) > 1:
        result.problem = "its manifests come from runs with different settings; render the missing units again with one command"
        return result
    first = loaded[0]
    # A failed unit has no PNG: the shard that tried it kept its record (and error) in its manifest.
    failed = {unit["label"]: unit for m in loaded for unit in m["sidecar"]["units"] if unit["status"] == "failed"}
    records = []
    for unit in first["units"]:
        stored = _whole(folder, unit["images"], unit["hash"])
        if stored is not None:
            records.append({k: v for k, v in stored.items() if k != "hash"})
        elif unit["label"] in failed:
            records.append(failed[unit["label"]])
            result.failed += 1
        else:
            result.missing.append(unit["label"])
    if result.missing:
        return result
    result.removed = remove_unlisted(folder, records)
    write_grid(folder, records, first["size"])
    images = sum(len(unit["images"]) for unit in first["units"])
    timings = [m["sidecar"]["timing"] for m in loaded]
    write_json(combined(first["sidecar"], timings, records, images), folder / "grid.json")
    remove_manifests(folder)
    return result


def _whole(folder: Path, images: list[str], digest: str) -> dict | None:
    """The record of a unit whose every file (its images, and the step images, alpha maps and
    upscaled images its record lists) carries `digest`; None while one is missing or stale."""
    first = read_record(folder / images[0]) if images else None
    if first is None or first.get("hash") != digest:
        return None
    names = [*images, *UnitFiles.listed(first).extras]
    stored = [read_record(folder / name) for name in names]
    return first if all(s is not None and s.get("hash") == digest for s in stored) else None


def _plain_png(name: Any) -> bool:
    return isinstance(name, str) and name.endswith(".png") and name == Path(name).name and "\\" not in name


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_manifest(data: Any) -> None:
    """ValueError saying what a manifest lacks: everything merge_folder reads, of the types it
    expects (a damaged or hand-edited file is one line, not a KeyError or TypeError)."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("manifest_version") != MANIFEST_VERSION:
        raise ValueError(f"manifest_version {data.get('manifest_version')!r}, expected {MANIFEST_VERSION}")
    shard = data.get("shard")
    if not (isinstance(shard, list) and len(shard) == 2 and all(type(v) is int for v in shard) and 0 <= shard[0] < shard[1]):
        raise ValueError(f"'shard' is {shard!r}, expected [I, N] with 0 <= I < N")
    if type(data.get("size")) is not int or not 1 <= data["size"] <= MAX_SIZE:
        raise ValueError(f"'size' is {data.get('size')!r}, expected a side from 1 to {MAX_SIZE}")
    units = data.get("units")
    if not isinstance(units, list) or not units or not all(
        isinstance(u, dict) and isinstance(u.get("label"), str) and isinstance(u.get("hash"), str)
        and isinstance(u.get("images"), list) and u["images"] and all(_plain_png(n) for n in u["images"])
        for u in units
    ):
        raise ValueError("'units' is not a list of units, each with a label, a hash and the names of its PNGs in the folder")
    names = [name for u in units for name in u["images"]]
    if len(set(names)) < len(names):  # a row repeated: no run writes one image twice
        raise ValueError(f"'units' names {next(n for n in names if names.count(n) > 1)} twice")
    sidecar = data.get("sidecar")
    if not isinstance(sidecar, dict) or not isinstance(sidecar.get("units"), list) or not all(
        isinstance(u, dict) and isinstance(u.get("label"), str) and isinstance(u.get("status"), str)
        and (u["status"] != "failed" or not (u.get("image") or u.get("images")))  # a failed unit has no PNG
        for u in sidecar["units"]
    ):
        raise ValueError("'sidecar.units' is not a list of unit records with labels and statuses")
    if not isinstance(sidecar.get("settings"), dict) or type(sidecar["settings"].get("steps")) is not int:
        raise ValueError("'sidecar.settings.steps' is not a number of steps")
    if sidecar["settings"].get("size") != data["size"]:  # what an atlas's cells are sized by ("abc", 1e300, 6000)
        raise ValueError(f"'sidecar.settings.size' is {sidecar['settings'].get('size')!r:.20}, expected the manifest's size {data['size']}")
    timing = sidecar.get("timing")
    if not (
        isinstance(timing, dict) and _number(timing.get("seconds")) and _number(timing.get("model_load_seconds"))
        and isinstance(timing.get("batch_sizes"), list) and all(type(b) is int for b in timing["batch_sizes"])
        and isinstance(timing.get("device"), str)
    ):
        raise ValueError("'sidecar.timing' lacks seconds, model_load_seconds, batch_sizes or device")


def merge_tree(out: Path) -> list[Merge]:
    """Merge every job folder under `out` that holds shard manifests."""
    folders = sorted({path.parent for path in out.rglob("grid.shard-*-of-*.json") if _MANIFEST.fullmatch(path.name)})
    return [merge_folder(folder) for folder in folders]
