"""Assembling an activation atlas from its rendered icons: atlas.png (each icon in its cell),
atlas.json (every cell's position, count, top channels, samples and objective) and a strip of
each cell's sample crops; and how well the icons stand for their cells.

Assembling needs no model (fv merge assembles a sharded atlas): what it needs beyond the job's
grid.json is in atlas-layout.npz and atlas-settings.json, written when the layout was made.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from fvcli.atlas.activation_layout import LAYOUT_FILE, WHITENING, Layout, cosine
from fvcli.files import atomic_write, parse_json, read_back
from fvcli.owned import remove_own, replaceable, within
from fvcli.messages import plural
from fvcli.models.layer_keys import channels_first
from fvcli.models.registry import LoadedModel
from fvcli.optvis.engine import activations
from fvcli.optvis.images import Placement, open_upright
from fvcli.run.output import BACKGROUND, GAP, SCHEMA_VERSION, png_bytes, png_is_whole, record_in, save_png, write_json
from fvcli.specs.limits import MAX_ATLAS_GRID, MAX_SIZE
from fvcli.specs.requests import CELLS_FILE
from fvcli.version import __version__

SIDECAR = "atlas.json"
IMAGE = "atlas.png"
SAMPLES_FOLDER = "atlas-samples"  # a strip of sample crops per cell, so the web atlas shows them from inside OUT
TOP_CHANNELS = 5  # channels listed per cell: the largest entries of its average
CROP = 48  # px: sample crops in the strips
ICON_FIELD = 1.5  # the atlas shows each icon's centre square of 1.5 times the layer's receptive field
EMPTY = (236, 236, 236)  # an atlas cell without an icon
STRIP_KEY = "fv-atlas-strip"  # the PNG text chunk of a sample strip's record: how fv knows its own strips
STRIP_NAME = re.compile(rf"{SAMPLES_FOLDER}/cell_\d{{3}}_\d{{3}}\.png")
SETTINGS_FILE = "atlas-settings.json"  # the atlas options and what assembling needs (see write_settings)


def is_atlas_folder(folder: Path) -> bool:
    """A job folder of an activation atlas (which assemble_folder says it cannot assemble when
    its layout or settings are gone)."""
    return any(os.path.lexists(folder / name) for name in (LAYOUT_FILE, CELLS_FILE, SETTINGS_FILE))


def icons(sidecar: dict) -> dict[int, dict]:
    """The unit records of grid.json by their row of the cells file. An atlas of one cell has one
    direction, whose unit records no row (as any one-vector direction file's)."""
    records = sidecar.get("units", []) if isinstance(sidecar, dict) else []
    if len(records) == 1 and isinstance(records[0], dict) and records[0].get("direction") is None:
        return {0: records[0]}
    return {unit.get("direction"): unit for unit in records if isinstance(unit, dict)}


def assemble_folder(folder: Path, say: Callable[[str], None]) -> Path | None:
    """Write atlas.png, atlas.json and the sample strips of an atlas job folder whose icons are all
    rendered (its grid.json lists them); None when they are not (yet)."""
    folder = Path(folder)
    layout = Layout.load(folder / LAYOUT_FILE)
    try:
        sidecar = parse_json(read_back(folder / "grid.json"))
    except (OSError, ValueError):
        return None
    if not isinstance(sidecar, dict):
        return None
    again = "; run the same fv render again, which lays the samples out again and keeps the icons of the same cells"
    if layout is None:
        say(f"fv: {folder}: the activation atlas is not assembled: {LAYOUT_FILE} is missing or damaged{again}")
        return None
    start = time.perf_counter()
    units = icons(sidecar)
    if set(units) != set(range(len(layout.counts))):
        say(f"fv: {folder}: the activation atlas is not assembled: grid.json lists {plural(len(units), 'icon')}, the layout has {plural(len(layout.counts), 'cell')}{again}")
        return None
    settings, atlas_settings = sidecar.get("settings") or {}, _atlas_settings(folder)
    icon_size = settings.get("size") if isinstance(settings, dict) else None
    if not (type(icon_size) is int and 0 < icon_size <= MAX_SIZE):
        say(f"fv: {folder}: the activation atlas is not assembled: grid.json's settings.size is {icon_size!r:.20}, not a size from 1 to {MAX_SIZE}{again}")
        return None
    grid, input_size, layer_grid = (atlas_settings.get(key) for key in ("grid", "input_size", "layer_grid"))
    extent = int(max(layout.cell_rows.max(), layout.cell_columns.max()) + 1)
    if not (
        type(grid) is int and extent <= grid <= MAX_ATLAS_GRID and type(input_size) is int and 0 < input_size <= MAX_SIZE
        and isinstance(layer_grid, list) and len(layer_grid) == 2 and all(type(v) is int for v in layer_grid)
        and (layout.position < np.array(layer_grid)).all()
    ):
        say(f"fv: {folder}: the activation atlas is not assembled: {SETTINGS_FILE} is missing or damaged (grid {grid!r:.20}, cells up to row and column {extent - 1}, samples off the layer's grid {layer_grid!r:.20}){again}")
        return None
    atlas = Image.new("RGB", (grid * icon_size, grid * icon_size), EMPTY)
    # The icon objective reads the centre position, which sees only the layer's receptive field:
    # the atlas shows that part of each icon (ICON_FIELD times the field), enlarged to the cell.
    crop = max(1, min(icon_size, round(ICON_FIELD * layout.box_side * icon_size / input_size)))
    images_folder = Path(atlas_settings.get("images", ""))
    cells = []
    for k in range(len(layout.counts)):
        unit = units[k]
        row, column = int(layout.cell_rows[k]), int(layout.cell_columns[k])
        icon_name = unit.get("image")
        if icon_name:
            with Image.open(io.BytesIO(read_back(folder / icon_name))) as icon:
                shown = _opaque(icon)
                if crop < shown.width:
                    left = (shown.width - crop) // 2
                    shown = shown.crop((left, left, left + crop, left + crop)).resize((icon_size, icon_size), Image.Resampling.LANCZOS)
                atlas.paste(shown, (column * icon_size, row * icon_size))
        average = layout.averages[k]
        top = np.argsort(-average, kind="stable")[:TOP_CHANNELS]
        samples = [
            {"path": layout.files[int(layout.image[i])], "position": [int(v) for v in layout.position[i]]}
            for i in layout.nearest[k] if i >= 0
        ]
        cells.append({
            "row": row, "column": column, "unit": k, "label": unit.get("label"), "count": int(layout.counts[k]),
            "top_channels": [{"channel": int(c), "value": _rounded(float(average[c]))} for c in top],
            "samples": samples, "samples_strip": f"{SAMPLES_FOLDER}/cell_{row:03d}_{column:03d}.png",
            "icon": icon_name, "status": unit.get("status"),
            "objective_start": unit.get("activation_start"), "objective": unit.get("activation_final"),
        })
    save_png(atlas, folder / IMAGE)
    _sample_strips(folder, images_folder, layout, cells, atlas_settings, say)
    seconds = dict(layout.seconds)
    seconds["render"] = (sidecar.get("timing") or {}).get("seconds")
    seconds["assemble"] = round(time.perf_counter() - start, 3)
    out = {
        "schema_version": SCHEMA_VERSION,
        "fv_version": __version__,
        "kind": "activation_atlas",
        "digest": layout.digest,
        "model": sidecar.get("model"),
        "layer": sidecar.get("layer"),
        "layer_module": sidecar.get("layer_module"),
        "objective": (
            f"each icon maximizes {sidecar.get('objective', '')}: dot(a, v) x max(0.1, cos(a, v))^P at the centre "
            "position, v the cell's row of " + CELLS_FILE
        ),
        "whitening": WHITENING if atlas_settings.get("whiten") else None,
        "settings": atlas_settings,
        "images": {"folder": str(images_folder), "count": len(layout.files)},
        "samples": int(len(layout.image)),
        "grid": {"rows": grid, "columns": grid, "cell": icon_size, "image": IMAGE, "icon_crop": crop},
        "box_side": layout.box_side,
        "layout_file": LAYOUT_FILE,
        "cells_file": CELLS_FILE,
        "cells": cells,
        "timing": {"seconds": seconds},
        "origin": (sidecar.get("job") or {}).get("origin"),
    }
    write_json(out, folder / SIDECAR)
    say(f"fv: {folder}: activation atlas of {plural(len(cells), 'cell')} on a {grid}x{grid} grid -> {folder / IMAGE}")
    return folder / IMAGE


def _atlas_settings(folder: Path) -> dict:
    """The atlas settings, as the prepare step wrote them beside the layout ({} when damaged)."""
    try:
        record = parse_json(read_back(folder / SETTINGS_FILE))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_settings(folder: Path, values: dict) -> None:
    """atlas-settings.json: the atlas options of the job and what assembling it needs later (fv
    merge has no model): the layer's grid of positions and the model's input size."""
    text = json.dumps(values, indent=2, sort_keys=True) + "\n"
    path = folder / SETTINGS_FILE
    try:  # bounded and regular: a FIFO here would hang a rerun, a sparse file of 2.5 GB fill memory
        if read_back(path, len(text.encode()) + 1) == text.encode():
            return
    except OSError:
        pass
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _listed_strips(folder: Path) -> set[str]:
    """The strip names the atlas.json fv wrote last lists (a manifest of fv's own); none when it is
    gone or damaged."""
    try:
        record = parse_json(read_back(folder / SIDECAR))
    except (OSError, ValueError):
        return set()
    cells = record.get("cells") if isinstance(record, dict) else None
    names = (cell.get("samples_strip") for cell in cells if isinstance(cell, dict)) if isinstance(cells, list) else ()
    return {name.removeprefix(f"{SAMPLES_FOLDER}/") for name in names if isinstance(name, str) and STRIP_NAME.fullmatch(name)}


def _opaque(icon: Image.Image) -> Image.Image:
    if icon.mode in ("RGBA", "LA"):
        grey = Image.new("RGBA", icon.size, (128, 128, 128, 255))
        grey.alpha_composite(icon.convert("RGBA"))
        return grey.convert("RGB")
    return icon.convert("RGB")


def _sample_strips(folder: Path, images: Path, layout: Layout, cells: list[dict], stored: dict, say: Callable[[str], None]) -> None:
    """A strip of each cell's sample crops (SAMPLES_FOLDER), cut from the original images around
    each sample's position, as dataset examples are; a sample whose file is gone is a dark gap
    (and said). `stored`: the atlas settings (atlas-settings.json)."""
    rows_cols = tuple(stored["layer_grid"]) if stored.get("layer_grid") else None
    size = int(stored.get("input_size") or 0)
    if not within(folder / SAMPLES_FOLDER, folder):  # never written, nor pruned, through a link out
        say(f"fv: {folder}: {SAMPLES_FOLDER} leads out of the job folder (a symbolic link?); the sample strips are not written")
        return
    listed = _listed_strips(folder)
    refused: list[str] = []

    def own_strip(path: Path, data: bytes) -> bool:
        """A strip carries its record (png_bytes); one of an older fv is a PNG the old atlas.json lists."""
        return record_in(data, STRIP_KEY) is not None or (path.name in listed and png_is_whole(data))

    # Each image is opened once and let go (an atlas of 100 x 100 cells names up to 80,000 crops):
    # its crops are pasted into every strip that wants them, as dataset examples do.
    strips, uses = [], {}
    for k, cell in enumerate(cells):
        samples = [i for i in layout.nearest[cell["unit"]] if i >= 0]
        strips.append(Image.new("RGB", (max(1, len(samples)) * (CROP + GAP) - GAP, CROP), BACKGROUND))
        for slot, i in enumerate(samples):
            cell["samples"][slot]["box"] = None
            uses.setdefault(int(layout.image[i]), []).append((k, slot, i))
    gone = 0
    for index, wanted in sorted(uses.items()) if rows_cols is not None and size else []:
        try:
            original = open_upright(images / layout.files[index])
        except Exception:
            gone += 1
            continue
        placement = Placement(*original.size, size)
        for k, slot, i in wanted:
            y, x = (int(v) for v in layout.position[i])
            box = cells[k]["samples"][slot]["box"] = placement.to_original(_box(y, x, rows_cols, size, layout.box_side))
            strips[k].paste(original.crop(tuple(box)).resize((CROP, CROP), Image.Resampling.LANCZOS), (slot * (CROP + GAP), 0))
    for cell, strip in zip(cells, strips):
        data = png_bytes(strip, {"cell": [cell["row"], cell["column"]], "digest": layout.digest}, STRIP_KEY)
        path = folder / cell["samples_strip"]
        if not replaceable(path, folder, own_strip):
            refused.append(path.name)
            continue
        try:
            if read_back(path, follow=False) == data:
                continue
        except OSError:
            pass
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
    kept = {Path(cell["samples_strip"]).name for cell in cells}
    for path in sorted((folder / SAMPLES_FOLDER).glob("cell_*.png")):
        if path.name not in kept:
            remove_own(path, folder, own_strip)
    if refused:
        say(f"fv: {folder}: {plural(len(refused), 'file')} in {SAMPLES_FOLDER} that fv did not write ({', '.join(refused[:3])}) left as they are, not replaced by strips")
    if gone:
        say(f"fv: {folder}: {plural(gone, 'sample image')} in {images} could not be read (moved or removed?); their crops are left blank")


def _box(y: int, x: int, grid: tuple[int, int], size: int, side: int) -> tuple[float, float, float, float]:
    rows, columns = grid
    cy, cx = (y + 0.5) * size / rows, (x + 0.5) * size / columns
    left = min(max(cx - side / 2, 0.0), size - side)
    top = min(max(cy - side / 2, 0.0), size - side)
    return (left, top, left + side, top + side)


def _rounded(value: float) -> float:
    return float(f"{value:.5g}")


# ---- how well the icons stand for their cells ----


def nearest_cell_share(folder: Path, model: LoadedModel, normalization, layer_key: str) -> dict:
    """For each rendered icon of an atlas folder: its activation at the layer's centre position
    (where its objective reads), and whether that is closer (cosine) to its own cell's average than
    to any other kept cell's. Returns {"share": the fraction that are, "cells": K, "nearest_own":
    count, "misses": [units]}. `normalization`: the model's (engine.input_normalization)."""
    from fvcli.models.layer_keys import at_position, infer_layout

    folder = Path(folder)
    layout = Layout.load(folder / LAYOUT_FILE)
    sidecar = parse_json(read_back(folder / "grid.json"))
    units = [unit for _, unit in sorted(icons(sidecar).items()) if unit.get("image")]
    pixels = []
    for unit in units:
        with Image.open(io.BytesIO(read_back(folder / unit["image"]))) as icon:
            pixels.append(torch.from_numpy(np.asarray(_opaque(icon), dtype=np.float32) / 255).permute(2, 0, 1))
    device = next(iter(model.module.parameters())).device
    out = activations(model, torch.stack(pixels).to(device), (layer_key,), normalization, None)[layer_key]
    a = at_position(channels_first(out, infer_layout(tuple(out.shape))).float(), None).cpu().numpy()
    similarity = cosine(a.reshape(len(a), -1), layout.averages)
    own = np.array([u["direction"] for u in units])
    hits = similarity.argmax(axis=1) == own
    return {
        "share": float(hits.mean()) if len(hits) else 0.0, "cells": int(len(layout.counts)),
        "nearest_own": int(hits.sum()), "misses": [int(u) for u in own[~hits]],
    }
