"""Writing results: unit PNGs, the labelled grid, and the JSON sidecar. Every write is atomic.

A file is written to a temporary name in its folder and renamed into place, so a killed run leaves
either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import io
import json
import math
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from fvcli.files import atomic_write, parse_json, read_back
from fvcli.owned import remove_own
from fvcli.run.unit_files import UnitFiles, listed_names

SCHEMA_VERSION = 1
BACKGROUND = (24, 24, 24)
LABEL = (220, 220, 220)
DEAD = (255, 170, 40)
FAILED = (235, 70, 70)
GAP = 2
# Transparent images stand on a checkerboard in grids, as image editors show transparency; Lucid's
# notebook uses these two greys (0.95 and 0.6), eight squares a side.
CHECKERS = ((242, 242, 242), (153, 153, 153))
CHECKER_SQUARES = 8

if TYPE_CHECKING:  # torch loads where tensors are made: `fv atlas` never needs it
    import torch


def to_pil(image: torch.Tensor, alpha: bool = False) -> Image.Image:
    """A (C, H, W) float tensor in [0, 1] as an 8-bit image (round to nearest): grayscale for one
    channel, RGB for three. Other counts (a 4-band model's image) show their first three channels
    as RGB (the second, for 2, repeated as blue): the sidecar records the image's channels.
    `alpha`: the last channel is the opacity of one gray or three RGB ones: an LA or RGBA image."""
    import torch

    if alpha:
        assert image.shape[0] in (2, 4), "alpha goes with gray or RGB"
        array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
        return Image.fromarray(array.numpy())  # "LA" or "RGBA"
    array = (_shown(image).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    if array.shape[-1] == 1:
        return Image.fromarray(array[..., 0].numpy())  # "L"
    return Image.fromarray(array.numpy())  # "RGB"


def with_opacity(image, opacity, alpha: bool):
    """An image (C, H, W) with `opacity` (1, H, W) in [0, 1] as its alpha, for to_pil(..., alpha=True):
    an --alpha-map as MaCo's figures show it, the image fading where the model did not look. With
    `alpha` (an --alpha image), its own opacity is multiplied in. Colours as to_pil shows them."""
    import torch

    colours = image[:-1] if alpha else image
    if alpha:
        opacity = opacity * image[-1:]
    return torch.cat([_shown(colours), opacity])


def _shown(colours: torch.Tensor) -> torch.Tensor:
    """The planes a PNG shows of (C, H, W) colours: gray or RGB as they are, the first three of
    more, and for 2 the second repeated as blue."""
    import torch

    if colours.shape[0] == 2:
        return torch.cat([colours, colours[1:]])
    return colours[:3]


RECORD_KEY = "fv-unit"  # the PNG text chunk that holds a unit's record


def png_bytes(image: Image.Image, record: dict | None = None, key: str = RECORD_KEY) -> bytes:
    """A PNG's bytes; `record` (JSON-able, deterministic) travels inside it as the text chunk `key`,
    so an image and the record of how it was made are written, and survive, together: the record
    is also how fv proves a PNG is its own before replacing or removing it (fvcli.owned)."""
    info = None
    if record is not None:
        info = PngInfo()
        info.add_text(key, json.dumps(record, sort_keys=True, allow_nan=False))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def save_png(image: Image.Image, path: Path, record: dict | None = None) -> None:
    """Write a PNG atomically, with `record` inside it (see png_bytes)."""
    data = png_bytes(image, record)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def read_record(path: Path) -> dict | None:
    """The record inside a PNG written by save_png, or None (no file, no record, a record that is not
    a JSON object, or a PNG that is not whole: every chunk's CRC is checked and the file must end
    with IEND, so a cut file is redone)."""
    try:
        return record_in(read_back(path))
    except OSError:
        return None


def record_in(data: bytes, key: str = RECORD_KEY) -> dict | None:
    """The record inside a PNG's bytes (see read_record)."""
    try:
        if not png_is_whole(data):
            return None
        with Image.open(io.BytesIO(data)) as image:
            text = image.text.get(key)
        record = parse_json(text) if text else None
    except (OSError, ValueError, SyntaxError):
        return None
    return record if isinstance(record, dict) else None  # `[]` or a string is valid JSON, and no record


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_is_whole(data: bytes) -> bool:
    """Whether `data` is a PNG whose chunks all carry their CRC, ending with IEND and nothing after."""
    if not data.startswith(PNG_SIGNATURE):
        return False
    at = len(PNG_SIGNATURE)
    while at + 12 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kind_and_data = data[at + 4 : at + 8 + length]
        crc = data[at + 8 + length : at + 12 + length]
        if len(crc) != 4 or zlib.crc32(kind_and_data) != int.from_bytes(crc, "big"):
            return False
        at += 12 + length
        if kind_and_data[:4] == b"IEND":
            return at == len(data)
    return False


def write_json(data: dict, path: Path) -> None:
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(text: str, font: ImageFont.ImageFont, width: int) -> str:
    """The text, cut with an ellipsis to fit `width` pixels: the longest prefix that fits, found by
    bisection over at most `width` characters (no glyph is under a pixel wide), so a label of an
    inline direction (tens of thousands of characters) costs a few measurements, not one each."""
    text = text[: width + 1]
    if font.getlength(text) <= width:
        return text
    low, high = 0, len(text)  # text[:low] + "…" fits (or low is 0); text[:high] + "…" does not
    while high - low > 1:
        middle = (low + high) // 2
        if font.getlength(text[:middle] + "…") <= width:
            low = middle
        else:
            high = middle
    return text[:low] + "…"


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid for `count` cells."""
    columns = max(1, math.ceil(math.sqrt(count)))
    return math.ceil(count / columns), columns


def remove_unlisted(folder: Path, units: list[dict]) -> list[str]:
    """Before a job's grid.json is written for `units`: remove the PNGs an earlier run of these
    units wrote that their records no longer list (diversity images of another count, step images,
    alpha maps, upscaled images of other settings), so that a unit's files are what the sidecar
    lists. fv knows its own files by the record each carries (save_png): a PNG is removed only when
    its record names it and is of one of these units, so a user's own files, fv images copied in
    under other names, and other channels' images (a layer rendered in chunks into one folder)
    stay. Returns the names removed, sorted."""
    keep, objectives = listed_names(units), {unit.get("objective") for unit in units}

    def of_these_units(path: Path, data: bytes) -> bool:
        record = record_in(data)
        if record is None or not isinstance(record.get("objective"), str) or record["objective"] not in objectives:
            return False
        try:
            return path.name in listed_names([record])
        except (TypeError, KeyError, AttributeError):  # a record of fields of other types: not proven
            return False

    removed = []
    for path in sorted(folder.glob("*.png")):
        if path.name not in keep and path.name != "grid.png" and remove_own(path, folder, of_these_units):
            removed.append(path.name)
    return removed


def removed_line(removed: list[str]) -> str:
    """What remove_unlisted did, in words: the first few names and a count."""
    from fvcli.messages import plural

    shown = ", ".join(removed[:4]) + (f" and {len(removed) - 4} more" if len(removed) > 4 else "")
    return f"removed {plural(len(removed), 'file')} of an earlier run that this job no longer lists ({shown})"


def write_grid(folder: Path, units: list[dict], size: int) -> Path:
    """grid.png of a job folder from its sidecar unit records (label, status, image or images)."""
    cells = []
    for unit in units:
        images = [_opened(folder / name) for name in UnitFiles.listed(unit).images]
        cells.append((images or None, unit["label"], unit["status"]))
    path = folder / "grid.png"
    save_png(make_grid(cells, size), path)
    return path


def _opened(path: Path) -> Image.Image:
    """A unit's PNG, read whole: RGBA when it has transparency, else RGB."""
    with Image.open(io.BytesIO(read_back(path))) as image:
        transparent = image.mode in ("RGBA", "LA") or "transparency" in image.info
        return image.convert("RGBA" if transparent else "RGB")


def on_checkerboard(image: Image.Image) -> Image.Image:
    """An RGBA image composited over a checkerboard of CHECKER_SQUARES squares a side, as RGB."""
    width, height = image.size
    side = max(1, math.ceil(max(width, height) / CHECKER_SQUARES))
    board = Image.new("RGBA", image.size, CHECKERS[0])
    draw = ImageDraw.Draw(board)
    for row in range(math.ceil(height / side)):
        for column in range(1 - row % 2, math.ceil(width / side), 2):  # light in the corner
            draw.rectangle([column * side, row * side, (column + 1) * side - 1, (row + 1) * side - 1], fill=CHECKERS[1])
    return Image.alpha_composite(board, image.convert("RGBA")).convert("RGB")


def make_grid(cells: list[tuple[list[Image.Image] | None, str, str]], size: int) -> Image.Image:
    """A near-square grid of (images or None for failed, label, status) cells, labelled underneath.

    A cell's images (diversity copies, interpolation frames) stand side by side; transparent ones
    (RGBA, LA) on a checkerboard.
    """
    rows, columns = grid_shape(len(cells))
    per_cell = max((len(images) for images, _, _ in cells if images), default=1)
    font_size = max(9, min(16, size // 8))
    font = _font(font_size)
    label_height = font_size + 6
    width = per_cell * size + (per_cell - 1) * GAP
    between = GAP if per_cell == 1 else 4 * GAP  # cells of several images need a visible border
    cell_w, cell_h = width + between, size + label_height + GAP
    grid = Image.new("RGB", (columns * cell_w + GAP, rows * cell_h + GAP), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for index, (images, label, status) in enumerate(cells):
        x = GAP + (index % columns) * cell_w
        y = GAP + (index // columns) * cell_h
        if images:
            for k, image in enumerate(images):
                image = image.resize((size, size)) if image.size != (size, size) else image
                if image.mode in ("RGBA", "LA"):
                    image = on_checkerboard(image)
                grid.paste(image, (x + k * (size + GAP), y))
        else:  # a failed unit: a red cross, never a plausible-looking image
            draw.line([(x, y), (x + width - 1, y + size - 1)], fill=FAILED, width=2)
            draw.line([(x, y + size - 1), (x + width - 1, y)], fill=FAILED, width=2)
        colour = {"dead": DEAD, "flat": DEAD, "failed": FAILED}.get(status, LABEL)
        text = label if status == "ok" else f"{label} {status}"
        draw.text((x + 2, y + size + 2), _fit(text, font, width - 4), fill=colour, font=font)
    return grid
