"""Reading image files as a model sees them: upright, the shorter side resized, the centre square.

Dataset examples (fvcli.atlas.dataset_examples) read folders of them; caricature and inversion objectives read a
photo (fvcli.run.resolve), and so does `--init` (load_photo: images that start as a photo).
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor

from fvcli.errors import FvError
from fvcli.files import read_at_most
from fvcli.specs.limits import MAX_IMAGE_BYTES

Source = Path | bytes  # a file, or its bytes (read once, so that what is hashed is what is decoded)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def list_images(folder: Path) -> list[Path]:
    """The image files below `folder` (any depth), sorted by their path relative to it."""
    files = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


@dataclass(frozen=True)
class Placement:
    """Where the model's square input lies in an image of `width` x `height`: the image is resized so
    that its shorter side is `size`, and the centred `size` square is cut out."""

    width: int
    height: int
    size: int

    @property
    def resized(self) -> tuple[int, int]:
        scale = self.size / min(self.width, self.height)
        return max(self.size, round(self.width * scale)), max(self.size, round(self.height * scale))

    @property
    def offset(self) -> tuple[int, int]:
        width, height = self.resized
        return (width - self.size) // 2, (height - self.size) // 2

    def to_original(self, box: tuple[float, float, float, float]) -> list[int]:
        """A box (left, top, right, bottom) in input pixels as pixels of the original image."""
        (width, height), (dx, dy) = self.resized, self.offset
        sx, sy = self.width / width, self.height / height
        left, top = round((box[0] + dx) * sx), round((box[1] + dy) * sy)
        right, bottom = round((box[2] + dx) * sx), round((box[3] + dy) * sy)
        left, top = min(max(0, left), self.width - 1), min(max(0, top), self.height - 1)
        return [left, top, min(self.width, max(right, left + 1)), min(self.height, max(bottom, top + 1))]


MAX_PHOTO_PIXELS = 2**28  # 16,384 x 16,384: larger than any camera's picture
# fv checks the pixels from the header before decoding (load_image), so Pillow's own guard, which
# warns on two lines from 89 million pixels and refuses from 179 million, stays out of its way.
if Image.MAX_IMAGE_PIXELS is not None:
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS, MAX_PHOTO_PIXELS)
MAX_PHOTO_ASPECT = 64  # a panorama of 64:1 still has a centre square; 1 x 20,000 is no picture
_ORIENTATION = 0x0112  # the EXIF tag of cameras that store pictures sideways
_TURNED = (5, 6, 7, 8)  # its values that swap width and height


def _open(source: Source) -> Image.Image:
    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


# Decoding is bounded by what the headers say before any pixel is decoded: each image by the pixel
# limit, and the images being decoded at once (collection decodes several on threads) by
# DECODE_MEMORY, so four 510 KB 16-bit PNGs of 16,384 x 16,384 take turns instead of 10 GB at once.
DECODE_MEMORY = 5 << 29  # 2.5 GiB: one image at the pixel limit (2^28 pixels of 4 bytes) fits alone
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}


def decoded_bytes(width: int, height: int, mode: str) -> int:
    """The most decoding an image of this header takes: its pixels as decoded (4 bytes a pixel
    for modes not listed), a converted copy of them, and two 8-bit copies of a 16-bit grey image
    (measured: 1.5 GiB for a 16-bit PNG of 16,384 x 16,384, 6 bytes a pixel)."""
    return width * height * (2 * _MODE_BYTES.get(mode, 4) + 2)


class _Budget:
    """Bytes that threads take turns with: a share waits until it fits beside the others (one
    larger than the whole waits until it is alone)."""

    def __init__(self, limit: int):
        self.limit, self.used, self.changed = limit, 0, threading.Condition()

    @contextmanager
    def held(self, cost: int):
        cost = min(cost, self.limit)
        with self.changed:
            self.changed.wait_for(lambda: self.used + cost <= self.limit)
            self.used += cost
        try:
            yield
        finally:
            with self.changed:
                self.used -= cost
                self.changed.notify_all()
            if cost >= 1 << 28:
                _give_back()


def _give_back() -> None:
    """Return freed memory to the system. Each decoding thread has its own malloc arena, which
    keeps what a large image freed: four 16-bit PNGs of 16,384 px decoded in turn on four threads
    took 3.2 GiB, not 1.5 (with _give_back and Pillow's blocks below, 1.7)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


try:
    _LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None
except OSError:
    _LIBC = None
# Pillow's blocks of 64 MiB are above glibc's largest mmap threshold (32 MiB): freed, they go back
# to the system at once, whichever thread allocated them.
Image.core.set_block_size(64 << 20)
_DECODING = _Budget(DECODE_MEMORY)


def check_pixels(width: int, height: int) -> None:
    """ValueError for an image fv does not decode: more than MAX_PHOTO_PIXELS, or sides that
    differ more than MAX_PHOTO_ASPECT times (a 118-byte PNG of 1 x 20,000 would be resized to
    224 x 4,480,000)."""
    if width * height > MAX_PHOTO_PIXELS or max(width, height) > MAX_PHOTO_ASPECT * min(width, height):
        raise ValueError(
            f"an image of {width} x {height} pixels; fv reads images of at most {MAX_PHOTO_PIXELS:,} pixels "
            f"whose sides differ at most {MAX_PHOTO_ASPECT} times"
        )


def open_upright(source: Source, size: int | None = None, resized: tuple[int, int] | None = None) -> Image.Image:
    """An image file (or its bytes) in RGB, turned as its EXIF orientation says (as viewers show it).
    With `size`, a large JPEG may decode at a reduced scale whose shorter side is still at least
    `size`; with `resized`, the image is resized (bilinear) to it before it becomes RGB. Every
    image is checked from its header (check_pixels) and decoded within DECODE_MEMORY."""
    with _open(source) as image:
        check_pixels(*image.size)
        with _DECODING.held(decoded_bytes(*image.size, image.mode)):
            orientation = _orientation(image)
            if size is not None and orientation == 1:
                image.draft("RGB", Placement(*image.size, size).resized)
            upright = ImageOps.exif_transpose(image) if orientation != 1 else image
            if upright.mode.startswith("I"):  # 16-bit grey (PNG): convert("RGB") would clip at 255, not scale
                upright = _eight_bit(upright)
            if upright.mode not in ("L", "RGB"):
                upright = upright.convert("RGB")
            if resized is not None:
                upright = upright.resize(resized, Image.Resampling.BILINEAR)
            return upright.convert("RGB")


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit (or 32-bit integer) grey image scaled to 8 bits (v / 257), in place in one copy."""
    values = np.array(image)
    if values.dtype != np.uint16:
        np.clip(values, 0, 65535, out=values)
    np.floor_divide(values, 257, out=values)
    return Image.fromarray(values.astype(np.uint8))  # 2-D uint8: mode L


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation, read without decoding: Pillow's getexif() of a PNG whose eXIf chunk
    is not before its pixels decodes the whole image to look after them (1.5 GiB for a 16-bit PNG
    of 16,384 x 16,384, to read a header); fv takes such a PNG as upright."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    return image.getexif().get(_ORIENTATION, 1)


def upright_size(source: Source) -> tuple[int, int]:
    with _open(source) as image:
        width, height = image.size
        return (height, width) if _orientation(image) in _TURNED else (width, height)


def load_image(source: Source, size: int) -> Tensor:
    """An image file (or its bytes) as the model sees it: RGB and upright, its shorter side resized
    to `size` (bilinear), the centred square cut out; (3, size, size) in [0, 1], before normalization."""
    placement = Placement(*upright_size(source), size)
    check_pixels(placement.width, placement.height)
    rgb = open_upright(source, size, placement.resized)
    (dx, dy), side = placement.offset, size
    return pil_to_tensor(rgb.crop((dx, dy, dx + side, dy + side))).float() / 255


LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's "L" mode: what a grayscale model was trained on


def to_channels(pixels: Tensor, channels: int) -> Tensor:
    """RGB images (..., 3, H, W) as a model of `channels` sees photos: as they are for 3, their luma
    for 1; ValueError for other counts (a photo has no infrared band)."""
    if channels == 3:
        return pixels
    if channels == 1:
        weights = pixels.new_tensor(LUMA).view(3, 1, 1)
        return (pixels * weights).sum(dim=-3, keepdim=True)
    raise ValueError(f"a photo has 3 channels (RGB) and the model's images {channels}")


@dataclass(frozen=True)
class Photo:
    """A photo that images start from (`--init`). Its file's SHA-256 goes into each unit's hash and
    the sidecar, so a changed photo renders again and a moved one does not."""

    path: str
    sha256: str
    pixels: Tensor  # (channels, size, size) in [0, 1]


def decode_photo(data: bytes, size: int, channels: int) -> Tensor:
    """A photo file's bytes as the model's images are (load_image; its luma for a grayscale
    model); ValueError with the reason in one line when it is no image or has no such channels."""
    try:
        rgb = load_image(data, size)
    except Exception as error:  # any decoder's failure, in one line
        if "cannot identify image file" in str(error):
            raise ValueError("not an image file fv can read") from None
        raise ValueError((str(error) or type(error).__name__).splitlines()[0][:200]) from None
    return to_channels(rgb, channels)


def load_photo(path: str, size: int, channels: int) -> Photo:
    """The photo at `path` as the model's images; FvError naming --init and the file when it cannot
    be read as an image, or the model is neither RGB nor gray."""
    if channels not in (1, 3):
        raise FvError(f"--init {path}: a photo has RGB colours, but the model takes images of {channels} channels; --init needs an RGB or grayscale model")
    try:
        data = read_at_most(path, MAX_IMAGE_BYTES)  # read once: what is hashed is what is decoded
        pixels = decode_photo(data, size, channels)
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise FvError(f"--init {path}: cannot read it as an image ({reason})") from None
    return Photo(path, hashlib.sha256(data).hexdigest(), pixels)
