"""Writing dataset examples: per channel a strip of top crops (NNNN.png) and one of bottom crops
(NNNN_neg.png), cut from the original image files around each example's position, and
examples.json, which records every image path, value, position and box.

Channels are assembled STRIPS_AT_ONCE at a time, each image opened once for all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PIL import Image

from fvcli.atlas.receptive_fields import grid_of, input_box, position_of
from fvcli.messages import plural
from fvcli.optvis.images import Placement, open_upright
from fvcli.run.output import BACKGROUND, GAP, SCHEMA_VERSION, save_png, write_json
from fvcli.specs.settings import ExamplesSettings
from fvcli.version import __version__

STRIPS_AT_ONCE = 64  # channels whose strips are assembled together, each image opened once for them
ENDS = ("top", "bottom")
# Why the bottom examples are read from a layer's pre-ReLU twin, for examples.json.
PRE_RELU_WHY = (
    "the images that suppress a channel most are ranked before its ReLU: after it, nearly every image's "
    "minimum is 0 (pre_relu: off ranks the layer as named)"
)


def _rounded(value: float) -> float:
    return float(f"{value:.5g}")


def write_examples(
    job, group, folder: Path, files: list[Path], settings: ExamplesSettings, side: int, say: Callable[[str], None],
) -> None:
    """A collected job's (dataset_examples.LayerJob, of `group`, a ModelGroup) strips, every channel asked for, then examples.json (last: it marks the job
    done). `side`: px of the model's input that a position's crop covers (receptive_fields.field_sides)."""
    state, info, crop = job.state, job.info, settings.crop
    width = max(4, len(str(info.layout.channels - 1)))  # as the render's file names
    units = []
    for start in range(0, len(job.channels), STRIPS_AT_ONCE):
        chunk = job.channels[start : start + STRIPS_AT_ONCE]
        records: dict[tuple[int, str], list[dict]] = {}
        uses: dict[int, list[tuple[tuple[int, str], int, int]]] = {}
        for channel in chunk:
            for end in ENDS:
                entries = state.entries(channel, end)
                records[(channel, end)] = [
                    {
                        "path": files[image].relative_to(folder).as_posix(),
                        "value": _rounded(value),
                        "mean": _rounded(mean),
                        "position": list(position_of(index, info)),
                        "box": None,
                    }
                    for image, value, index, mean in entries
                ]
                for slot, (image, _, index, _) in enumerate(entries):
                    uses.setdefault(image, []).append(((channel, end), slot, index))
        strips = {
            key: Image.new("RGB", (max(1, len(r)) * (crop + GAP) - GAP, crop), BACKGROUND) for key, r in records.items()
        }
        for image, wanted in sorted(uses.items()):
            try:
                original = open_upright(files[image])
            except Exception:  # gone or broken since it was read: a dark cell, and no box
                continue
            placement = Placement(*original.size, group.size)
            for key, slot, index in wanted:
                box = placement.to_original(input_box(index, info, group.size, side))
                records[key][slot]["box"] = box
                piece = original.crop(tuple(box)).resize((crop, crop), Image.Resampling.LANCZOS)
                strips[key].paste(piece, (slot * (crop + GAP), 0))
        for channel in chunk:
            label = f"{channel:0{width}d}"
            save_png(strips[(channel, "top")], job.folder / f"{label}.png")
            save_png(strips[(channel, "bottom")], job.folder / f"{label}_neg.png")
            units.append({
                "channel": channel,
                "label": label,
                "strip": f"{label}.png",
                "negative_strip": f"{label}_neg.png",
                "top": records[(channel, "top")],
                "bottom": records[(channel, "bottom")],
            })
    model, grid = group.model, grid_of(info)
    record = {
        "schema_version": SCHEMA_VERSION,
        "fv_version": __version__,
        "hash": job.digest,
        "model": {"name": model.name, "weights": model.weights, "weights_sha256": model.weights_sha256},
        "layer": info.name,
        "layer_module": info.key,
        "bottom_layer": job.bottom.name,
        "bottom_layer_module": job.bottom.key,
        **({"pre_relu": {"read_as": {info.name: job.bottom.name}, "why": PRE_RELU_WHY}} if job.bottom is not info else {}),
        "input_size": group.size,
        "normalization": None if group.normalization is None else {"mean": group.normalization[0], "std": group.normalization[1]},
        "grid": list(grid) if grid else None,
        "box_side": side,
        "ranking": (
            f"top: the channel's maximum over positions in {info.name}, highest first; bottom: its minimum over "
            f"positions in {job.bottom.name}, lowest first; equal extremes by the mean over positions (higher first "
            "at the top, lower at the bottom)"
        ),
        "images": {
            "folder": str(folder),
            "seen": state.seen,
            "skipped": state.skipped,
            "skipped_files": state.skipped_files,
        },
        "k": settings.k,
        "crop": crop,
        "units": units,
    }
    write_json(record, job.folder / "examples.json")
    say(
        f"fv: {job.folder}: top and bottom {settings.k} of {plural(state.seen, 'image')} for "
        f"{plural(len(job.channels), 'channel')} of {model.name} {info.name}"
        + (f" (the bottom before its ReLU, from {job.bottom.name})" if job.bottom is not info else "")
        + " -> examples.json"
    )
