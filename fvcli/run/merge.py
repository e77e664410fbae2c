"""Assembling jobs that were rendered in shards (`--shard`, SLURM job arrays, torchrun ranks).

A shard that leaves a job incomplete writes a manifest beside the unit PNGs it rendered: the job's
sidecar as far as this shard knows it, each unit's image names and the hash its PNGs must carry. When
every unit's PNGs carry their hash, `fv merge OUT` writes the job's grid.png and grid.json from the
records inside the PNGs, so the result is the one a single process would have written, and removes
the manifests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from fvcli.run.output import read_record, remove_unlisted, write_grid, write_json
from fvcli.run.sidecar import combined
from fvcli.run.unit_files import UnitFiles

MANIFEST_VERSION = 1
_MANIFEST = re.compile(r"grid\.shard-(\d+)-of-(\d+)\.json", re.ASCII)


def manifest_name(shard: tuple[int, int]) -> str:
    return "grid.shard-{}-of-{}.json".format(*shard)


def manifests(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("grid.shard-*-of-*.json") if _MANIFEST.fullmatch(p.name))


def remove_manifests(folder: Path) -> None:
    for path in manifests(folder):
        path.unlink(missing_ok=True)


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


def merge_folder(folder: Path) -> Merge:
    """Assemble one job folder from its manifests and unit PNGs, when every unit is there."""
    loaded = []
    for path in manifests(folder):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("manifest_version") != MANIFEST_VERSION:
                raise ValueError(f"manifest_version {data.get('manifest_version')!r}, expected {MANIFEST_VERSION}")
            loaded.append(data)
        except (OSError, ValueError, AttributeError) as error:
            return Merge(folder, [], problem=f"{path.name} cannot be read ({error})")
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


def merge_tree(out: Path) -> list[Merge]:
    """Merge every job folder under `out` that holds shard manifests."""
    folders = sorted({path.parent for path in out.rglob("grid.shard-*-of-*.json") if _MANIFEST.fullmatch(path.name)})
    return [merge_folder(folder) for folder in folders]
