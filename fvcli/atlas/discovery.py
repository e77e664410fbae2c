"""What `fv atlas` finds on disk: every job folder under OUT, its units and its dataset examples.

A job folder is found by its `grid.json` sidecar; a unit's files are those its record lists
(fvcli.run.unit_files), and only those that are files inside OUT: a sidecar cannot make the atlas
load anything from elsewhere. Broken folders are skipped with one line each. No torch here.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fvcli.errors import FvError
from fvcli.files import in_one_line, parse_json, read_back
from fvcli.messages import plural
from fvcli.run.unit_files import UnitFiles
from fvcli.specs.limits import MAX_ATLAS_GRID
from fvcli.specs.requests import safe_component

SCHEMA_VERSION = 1  # of grid.json and examples.json that this atlas reads
PRUNE = ("units", "examples", "atlas-samples")  # folders inside a job folder that hold no jobs


@dataclass
class Unit:
    record: dict  # the sidecar's unit record
    images: list[dict]  # {image, objective, activation_start, activation_final}, only those on disk
    missing: int  # images the record names that are not on disk
    page: str = ""  # file name under units/
    extras: list[tuple[str, str]] = field(default_factory=list)  # (caption, file) of step images, alpha maps, ... on disk


@dataclass
class Job:
    rel: str  # the job folder, relative to OUT, with '/'
    folder: Path
    sidecar: dict
    units: list[Unit]
    examples: dict | None = None  # examples.json of this folder, when valid
    activation_atlas: dict | None = None  # atlas.json of an activation atlas job, when valid
    group: list[Job] = field(default_factory=list)  # every job of the same model and layer, this one too

    @functools.cached_property
    def by_channel(self) -> dict[int, Unit]:
        return {u.record["channel"]: u for u in reversed(self.units) if isinstance(u.record.get("channel"), int)}

    @functools.cached_property
    def examples_by_channel(self) -> dict[int, dict]:
        units = (self.examples or {}).get("units") or []
        return {u["channel"]: u for u in reversed(units) if isinstance(u, dict) and isinstance(u.get("channel"), int)}

    @property
    def model_key(self) -> tuple[str, str]:
        model = self.sidecar["model"]
        return str(model.get("name")), str(model.get("weights"))

    @property
    def layer(self) -> str:
        return self.sidecar.get("layer") or "(model output)"

    @property
    def size(self) -> int:
        return int(self.sidecar["settings"]["size"])

    @property
    def title(self) -> str:
        """The job's folder name: the layer for a plain job, else what the job is."""
        return self.rel.rsplit("/", 1)[-1]

    def count(self, status: str) -> int:
        return sum(u.record.get("status") == status for u in self.units)

    @property
    def tags(self) -> list[str]:
        tags = ["activation atlas"] if self.activation_atlas is not None else []
        if self.units and all(str(u.record.get("objective", "")).startswith("-") for u in self.units):
            tags.append("negative")
        diversity = self.sidecar["settings"].get("diversity")
        if isinstance(diversity, dict):
            tags.append(f"diversity ×{diversity.get('images')}")
        elif any(len(u.record.get("images") or []) > 1 for u in self.units):
            tags.append("frames")
        return tags


def _natural(text: str) -> list:
    """Sort key that puts mixed4a before mixed10a."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"([0-9]{1,18})", text))]


def _check_sidecar(data: Any) -> None:
    """Raise ValueError unless `data` looks like a grid.json this atlas can read."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"schema_version {data.get('schema_version')!r}, this fv reads {SCHEMA_VERSION}")
    if not isinstance(data.get("model"), dict) or not isinstance(data.get("settings"), dict):
        raise ValueError("no 'model' or 'settings' mapping")
    int(data["settings"]["size"])
    units = data.get("units")
    if not isinstance(units, list) or not all(isinstance(u, dict) and isinstance(u.get("label"), str) for u in units):
        raise ValueError("'units' is not a list of unit records with labels")


def _out_of(job_folder: Path) -> Path:
    """The --out folder of a job folder: OUT/NAME for a named job, else OUT/MODEL/LAYER."""
    try:
        named = parse_json(read_back(job_folder / "grid.json"))["job"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        named = None
    absolute = job_folder.resolve()
    return absolute.parent if named else absolute.parent.parent


def inside(out: Path, folder: Path, name: Any) -> bool:
    """Whether `name`, a file name a sidecar gives relative to `folder`, is a file path that stays inside
    `out` once resolved: the atlas loads nothing from outside OUT. Absolute paths, URLs (file:,
    http:), '..' and symlinks that lead out are refused."""
    if not isinstance(name, str) or not name or name.startswith(("/", "\\")) or re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", name):
        return False
    try:
        resolved, root = (folder / name).resolve(), out.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    return root in resolved.parents


def _unit(out: Path, folder: Path, record: dict, say: Callable[[str], None]) -> Unit:
    files = UnitFiles.listed(record)
    entries = record.get("images") or ([{k: record.get(k) for k in ("image", "objective", "activation_start", "activation_final")}] if files.images else [])
    safe = []
    for entry in entries:
        if inside(out, folder, entry.get("image")):
            safe.append(entry)
        else:
            say(f"fv: atlas: {folder / 'grid.json'}: unit {record['label']}: skipped image {entry.get('image')!r}, not a file inside {out}")
    present = [e for e in safe if (folder / e["image"]).is_file()]
    extras = [
        *((f"after step {s.get('step')}", s["image"]) for s in files.steps),
        *(("where the model looked (--alpha-map)", name) for name in files.alpha_maps),
        *((f"×{u.get('scale')} (--cppn-upscale)", u["image"]) for u in files.upscaled),
    ]
    shown = [(caption, name) for caption, name in extras if inside(out, folder, name) and (folder / name).is_file()]
    return Unit(record, present, len(safe) - len(present), extras=shown)


def discover(out: Path, say: Callable[[str], None]) -> list[Job]:
    """Every readable job folder under `out`; broken ones are skipped with one line each."""
    jobs: list[Job] = []
    for root, dirs, files in os.walk(out):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if "grid.json" not in files:
            continue
        folder = Path(root)
        dirs[:] = [d for d in dirs if d not in PRUNE]
        rel = folder.relative_to(out).as_posix()
        if rel == ".":
            raise FvError(f"{out} is a job folder (it holds grid.json); give the --out folder it was rendered into, {_out_of(out)}")
        escapes = [name for name in ("grid.json", "units") if os.path.lexists(folder / name) and not inside(out, folder, name)]
        if escapes:  # a symlink: the atlas would read, or write pages, outside OUT
            say(f"fv: atlas: skipped {folder}: {escapes[0]} is a link to outside {out}")
            continue
        try:
            sidecar = parse_json(read_back(folder / "grid.json"))
            _check_sidecar(sidecar)
            units = [_unit(out, folder, record, say) for record in sidecar["units"]]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
            say(f"fv: atlas: skipped {folder}: unreadable grid.json ({in_one_line(error)})")
            continue
        if not any(u.images for u in units):
            say(f"fv: atlas: skipped {folder}: grid.json lists {plural(len(units), 'unit')}, but none of their PNGs is there")
            continue
        missing = sum(u.missing for u in units)
        if missing:
            say(f"fv: atlas: {folder}: {plural(missing, 'unit image')} named in grid.json {'is' if missing == 1 else 'are'} missing; shown as gaps")
        job = Job(rel, folder, sidecar, units)
        job.examples = _examples(out, folder, sidecar, say)
        job.activation_atlas = _activation_record(out, folder, say)
        jobs.append(job)
    return jobs


def _examples(out: Path, folder: Path, sidecar: dict, say: Callable[[str], None]) -> dict | None:
    """The folder's examples.json when it is readable and of this job's model, weights and layer;
    strips it names outside OUT are left out, with a line each."""
    path = folder / "examples" / "examples.json"
    if not path.is_file():
        return None
    if not inside(out, folder, "examples/examples.json"):
        say(f"fv: atlas: {path}: ignored, it leads outside {out}")
        return None
    try:
        data = parse_json(read_back(path))
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION or not isinstance(data.get("units"), list):
            raise ValueError(f"schema_version {data.get('schema_version')!r} or no 'units' list" if isinstance(data, dict) else "not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as error:
        say(f"fv: atlas: {path}: ignored, unreadable ({in_one_line(error)})")
        return None
    model, theirs = sidecar["model"], data.get("model") or {}
    same_layer = data.get("layer") == sidecar.get("layer") or data.get("layer_module") == sidecar.get("layer_module")
    if (theirs.get("name"), theirs.get("weights")) != (model.get("name"), model.get("weights")) or not same_layer:
        say(
            f"fv: atlas: {path}: ignored, it is of {theirs.get('name')} ({theirs.get('weights')}) {data.get('layer')}, "
            f"the renders of {model.get('name')} ({model.get('weights')}) {sidecar.get('layer')}"
        )
        return None
    for unit in data["units"]:
        for key in ("strip", "negative_strip"):
            if isinstance(unit, dict) and unit.get(key) is not None and not inside(out, path.parent, unit[key]):
                say(f"fv: atlas: {path}: channel {unit.get('channel')}: skipped {key} {unit[key]!r}, not a file inside {out}")
                unit[key] = None
    return data


def name_pages(job: Job) -> None:
    """units/LABEL.html, made a safe file name and unique within the job."""
    taken: set[str] = set()
    for unit in job.units:
        base = safe_component(unit.record["label"])
        name, n = base, 1
        while name.lower() in taken:  # case-insensitive file systems
            n += 1
            name = f"{base}-{n}"
        taken.add(name.lower())
        unit.page = f"{name}.html"


def _layer_rank(job: Job) -> tuple:
    """Forward order where the sidecar gives it (`layer_order`), then the name, naturally sorted."""
    order = job.sidecar.get("layer_order")
    return (0, order, _natural(job.layer)) if isinstance(order, int) else (1, 0, _natural(job.layer))


def group_jobs(jobs: list[Job]) -> dict[tuple[str, str], dict[str, list[Job]]]:
    """model (name, weights) -> layer -> its jobs, each sorted for display; fills Job.group."""
    models: dict[tuple[str, str], dict[str, list[Job]]] = {}
    for job in jobs:
        # A job of a pre-ReLU twin (a negative image of mixed4a reads mixed4a_pre_relu) is shown
        # with the layer whose ReLUs the twin feeds, so that a channel's page shows both.
        twin_of = (job.sidecar.get("pre_relu") or {}).get("of_module")
        layer_key = twin_of or job.sidecar.get("layer_module") or job.layer
        models.setdefault(job.model_key, {}).setdefault(layer_key, []).append(job)
    ordered = {}
    for key in sorted(models, key=lambda k: (_natural(k[0]), _natural(k[1]))):
        layers = models[key]
        ordered[key] = {}
        for layer_key in sorted(layers, key=lambda k: _layer_rank(layers[k][0])):
            group = sorted(layers[layer_key], key=lambda j: (bool(j.tags), _natural(j.rel)))
            for job in group:
                job.group = group
            ordered[key][layer_key] = group
    return ordered


ACTIVATION_PAGE = "atlas.html"  # an activation atlas job's page (fvcli.atlas.activation_atlas writes atlas.json)


def _activation_record(out: Path, folder: Path, say: Callable[[str], None]) -> dict | None:
    """atlas.json of a job folder, with every file it names inside OUT, else None (said why)."""
    path = folder / "atlas.json"
    if not path.is_file():
        return None
    try:
        record = parse_json(read_back(path))
        check_atlas_record(record)
    except (OSError, ValueError) as error:
        say(f"fv: atlas: {path}: skipped, not an activation atlas fv can read ({in_one_line(error)})")
        return None
    cells = record["cells"]
    names = [record["grid"]["image"], *(c["icon"] for c in cells if c.get("icon")), *(c["samples_strip"] for c in cells)]
    bad = next((name for name in names if not inside(out, folder, name)), None)
    if bad is not None:
        say(f"fv: atlas: {path}: skipped, it names {bad!r}, not a file inside {out}")
        return None
    return record


def check_atlas_record(record: Any) -> None:
    """ValueError (naming the field) unless atlas.json has every field the atlas page reads, of
    its type: a damaged one (cells as a mapping, a sample without a position, a top channel as a
    number) is skipped with a line, never an AttributeError."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(what)

    def mapping(value: Any, what: str) -> dict:
        need(isinstance(value, dict), f"{what} is not a mapping")
        return value

    def integer(value: Any, low: int, high: int, what: str) -> None:
        need(type(value) is int and low <= value <= high, f"{what} is {value!r:.20}, not an integer from {low} to {high}")

    record, numbers = mapping(record, "atlas.json"), (int, float, type(None))
    grid = mapping(record.get("grid"), "grid")
    rows, columns = grid.get("rows"), grid.get("columns")
    integer(rows, 1, MAX_ATLAS_GRID, "grid.rows")
    integer(columns, 1, MAX_ATLAS_GRID, "grid.columns")
    need(isinstance(grid.get("image"), str), "grid.image is not a file name")
    for key in ("model", "settings", "images"):
        need(isinstance(record.get(key), (dict, type(None))), f"{key} is not a mapping")
    integer(record.get("samples", 0), 0, 1 << 40, "samples")
    cells = record.get("cells")
    need(isinstance(cells, list), "cells is not a list")
    for k, cell in enumerate(cells):
        where = f"cells[{k}]"
        cell = mapping(cell, where)
        integer(cell.get("row"), 0, rows - 1, f"{where}.row")
        integer(cell.get("column"), 0, columns - 1, f"{where}.column")
        integer(cell.get("count"), 0, 1 << 40, f"{where}.count")
        need(isinstance(cell.get("samples_strip"), str), f"{where}.samples_strip is not a file name")
        need(isinstance(cell.get("icon"), (str, type(None))), f"{where}.icon is not a file name")
        need(all(isinstance(cell.get(key), numbers) for key in ("objective_start", "objective")), f"{where}: an objective that is not a number")
        tops, samples = cell.get("top_channels", []), cell.get("samples", [])
        need(isinstance(tops, list) and all(isinstance(t, dict) and isinstance(t.get("value"), numbers) for t in tops), f"{where}.top_channels is not a list of channels with values")
        need(isinstance(samples, list), f"{where}.samples is not a list")
        for sample in samples:
            position = mapping(sample, f"{where}.samples[]").get("position")
            need(isinstance(position, list) and len(position) == 2, f"{where}: a sample without a [y, x] position")
