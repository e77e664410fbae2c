"""The magnitude spectrum that `--param maco` holds fixed: measured from a folder of images by
`fv spectrum`, kept in a .pt file, read back and fitted to a render's size and channels.

A spectrum is the mean over the images of |rfft2(image)| (orthonormal), per channel: (C, S, S//2+1)
for images of S x S px, rows the vertical frequencies in FFT order, columns the horizontal ones from
0 to the Nyquist frequency. The channels are those MaCo's phase lives in: for RGB with colour
decorrelation (fv render's default), the decorrelated colours, i.e. the pixels multiplied by the
inverse of fv's colour matrix, so that recorrelating the generated image gives it the measured
statistics; without it, plain RGB; or one grayscale channel (ITU-R BT.601 luma), which serves
models of any channel count. The zero frequency is kept as measured: it sets the channels' means
relative to each other.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from fvcli.version import __version__
from fvcli.optvis.images import list_images, load_image, to_channels
from fvcli.errors import FvError
from fvcli.messages import plural, progress_bar
from fvcli.files import atomic_write, check_output_folders, read_at_most
from fvcli.models.weights import checked_tensor, safe_load
from fvcli.optvis.param import color_matrix

FORMAT = "fv-spectrum"
VERSION = 1
DEFAULT_SIZE = 224  # px: ImageNet models' input size
MIN_SIZE = 8  # px: fewer frequencies than this say nothing about a fall-off
MAX_FILE_BYTES = 256 * 2**20  # a 2048 px RGB spectrum is 25 MB
COLOURS = ("decorrelated", "rgb", "grayscale")


@dataclass(frozen=True, eq=False)
class Spectrum:
    """A spectrum file as read: its magnitude (C, S, S//2+1), what it was measured on, its sha256."""

    magnitude: Tensor
    colour: str  # one of COLOURS
    count: int  # images measured
    folder: str
    path: str
    sha256: str

    @property
    def size(self) -> int:
        return self.magnitude.shape[1]

    def describe(self) -> dict:
        """For the sidecar's parameterization: where the magnitude came from."""
        return {
            "source": "file", "file": self.path, "sha256": self.sha256, "size": self.size,
            "colour": self.colour, "images": self.count, "folder": self.folder,
        }

    def fitted(self, size: int, channels: int) -> Tensor:
        """The magnitude at a render's `size` and image `channels` (a grayscale spectrum serves every
        channel). Another size is resampled bilinearly in frequency (cycles per pixel), so that each
        frequency keeps its magnitude; frequencies beyond the measured ones take the nearest."""
        return _fitted(self, size, channels)


@lru_cache(maxsize=16)
def _fitted(spectrum: Spectrum, size: int, channels: int) -> Tensor:
    magnitude = spectrum.magnitude
    if spectrum.size != size:
        source = spectrum.size
        # Rows in increasing frequency: after fftshift, frequency f sits at row f * S + S // 2, and
        # columns (0 .. Nyquist) at f * S. align_corners=True maps those indices linearly to [-1, 1].
        ordered = torch.fft.fftshift(magnitude, dim=1)[None]
        fy = torch.fft.fftfreq(size)[:, None].expand(size, size // 2 + 1)
        fx = torch.fft.rfftfreq(size)[None, :].expand(size, size // 2 + 1)
        row = (fy * source + source // 2) / (source - 1) * 2 - 1
        column = (fx * source) / (source // 2) * 2 - 1
        grid = torch.stack([column, row], dim=-1)[None].to(magnitude.dtype)
        magnitude = F.grid_sample(ordered, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    return magnitude.expand(channels, -1, -1).clone() if magnitude.shape[0] == 1 else magnitude


def check_fits(spectrum: Spectrum, channels: int, decorrelate: bool) -> None:
    """FvError unless the spectrum serves images of `channels` channels, decorrelated or not."""
    where = f"--spectrum {spectrum.path}"
    if spectrum.colour == "grayscale":
        return
    if channels != spectrum.magnitude.shape[0]:
        raise FvError(
            f"{where}: a spectrum of {plural(spectrum.magnitude.shape[0], 'channel')}, and this model's images have "
            f"{plural(channels, 'channel')}; measure a grayscale one (fv spectrum --grayscale), which serves any channel count"
        )
    if decorrelate and spectrum.colour == "rgb":
        raise FvError(f"{where}: measured in plain RGB; render with --no-decorrelate, or measure it again without --no-decorrelate")
    if not decorrelate and spectrum.colour == "decorrelated":
        raise FvError(f"{where}: measured in decorrelated colours; render without --no-decorrelate, or measure it with fv spectrum --no-decorrelate")


def read_spectrum(path: str) -> Spectrum:
    """The spectrum in the file `path` (as --spectrum names it), checked; FvError in one line."""
    file = Path(path).expanduser()
    try:
        stat = file.stat()
    except OSError:
        raise FvError(f"--spectrum {path}: file not found; fv spectrum FOLDER -o FILE.pt measures one") from None
    if not file.is_file():
        raise FvError(f"--spectrum {path}: not a file; expected a .pt file that fv spectrum wrote")
    if stat.st_size > MAX_FILE_BYTES:
        raise FvError(f"--spectrum {path}: {stat.st_size} bytes, more than a spectrum file holds ({MAX_FILE_BYTES})")
    return _read(str(file.resolve()), path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=16)
def _read(resolved: str, path: str, mtime_ns: int, size: int) -> Spectrum:
    """Read once per file version (several jobs may name one file)."""
    where = f"--spectrum {path}"
    try:
        data = read_at_most(resolved, MAX_FILE_BYTES)
    except OSError as error:
        raise FvError(f"{where}: cannot read it ({error.strerror or error})") from None
    except ValueError as error:  # it grew since it was measured
        raise FvError(f"{where}: cannot read it ({error})") from None
    expected = "expected a .pt file that fv spectrum wrote"
    try:  # torch's safe loader, quietly: its advice to turn weights_only off is not passed on
        loaded = safe_load(io.BytesIO(data))
    except ValueError as error:
        raise FvError(f"{where}: not a spectrum file ({error}); {expected}") from None
    if not isinstance(loaded, dict) or loaded.get("format") != FORMAT:
        raise FvError(f"{where}: not a spectrum file; {expected}")
    if loaded.get("version") != VERSION:
        raise FvError(f"{where}: spectrum file version {loaded.get('version')!r}, this fv reads {VERSION}; measure it again")
    magnitude, colour, count, folder = (loaded.get(key) for key in ("magnitude", "colour", "count", "folder"))
    try:
        checked_tensor(magnitude, MAX_FILE_BYTES // 2, "its magnitude")
    except ValueError as error:
        raise FvError(f"{where}: {error}; {expected}") from None
    if magnitude.dim() != 3 or not magnitude.is_floating_point():
        raise FvError(f"{where}: its magnitude is not a (channels, size, size // 2 + 1) tensor of numbers")
    if not (type(count) is int and count >= 0 and isinstance(folder, (str, type(None)))):
        raise FvError(f"{where}: its count {count!r:.20} or folder {folder!r:.40} is damaged; {expected}")
    channels, rows, columns = magnitude.shape
    if channels not in (1, 3) or rows < MIN_SIZE or columns != rows // 2 + 1 or colour not in COLOURS or (channels == 1) != (colour == "grayscale"):
        raise FvError(f"{where}: its magnitude has shape {tuple(magnitude.shape)} for {colour!r} colours; expected (3 or 1, S, S // 2 + 1), S at least {MIN_SIZE}")
    magnitude = magnitude.float()
    if not torch.isfinite(magnitude).all() or (magnitude < 0).any() or not (magnitude > 0).any():
        raise FvError(f"{where}: its magnitudes must be finite, not negative, and not all 0")
    return Spectrum(
        magnitude, colour, count, folder or "", path, hashlib.sha256(data).hexdigest()
    )


# ---- fv spectrum ----


def _in_colour(image: Tensor, colour: str) -> Tensor:
    """An RGB image (3, S, S) in [0, 1] in the channels a spectrum is measured in."""
    if colour == "grayscale":
        return to_channels(image, 1)
    if colour == "decorrelated":
        # MaCo multiplies its images by fv's colour matrix: measure what that matrix must be fed.
        flat = torch.linalg.solve(color_matrix().to(image.dtype), image.reshape(3, -1))
        return flat.view_as(image)
    return image


def measure(paths: list[Path], size: int, colour: str, on_image: Callable[[], None] | None = None) -> tuple[Tensor | None, int, list[Path]]:
    """The mean |rfft2| (orthonormal) of the images' centre squares at `size` px in `colour`, how
    many were measured, and the files that could not be read (skipped)."""
    total, count, skipped = None, 0, []
    for path in paths:
        try:
            image = load_image(path, size)
        except Exception:  # any decoder's failure: the image is skipped and counted, never fatal
            skipped.append(path)
        else:
            magnitude = torch.fft.rfft2(_in_colour(image.double(), colour), norm="ortho").abs()
            total = magnitude if total is None else total + magnitude
            count += 1
        if on_image is not None:
            on_image()
    return (None if total is None else (total / count).float()), count, skipped


def measure_folder(folder: str, output: str, size: int, colour: str, say: Callable[[str], None], quiet: bool) -> Spectrum:
    """`fv spectrum`: measure the images below `folder` and write the spectrum to `output`
    atomically. Bad input (no folder, no readable image, an output that cannot be written) is an
    FvError, checked before anything is written."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise FvError(f"{folder}: folder not found")
    if not root.is_dir():
        raise FvError(f"{folder}: not a folder; expected a folder of JPEG or PNG images")
    target = Path(output).expanduser()
    if target.is_dir():
        raise FvError(f"--output {output}: a folder; expected a file name such as spectrum.pt")
    if (target.exists() or target.is_symlink()) and not target.is_file():  # a device, FIFO or dangling link
        raise FvError(f"--output {output}: exists and is not a regular file; expected a file name such as spectrum.pt")
    try:
        check_output_folders([(target.parent, f"--output {output}")])
    except FvError as error:
        raise FvError(f"--output {output}: {error}") from None
    paths = list_images(root)
    if not paths:
        raise FvError(f"{folder}: no JPEG or PNG images in it (searched recursively)")
    with progress_bar(None, quiet, total=len(paths), unit="image", desc="spectrum") as bar:
        magnitude, count, skipped = measure(paths, size, colour, lambda: bar.update(1))
    if magnitude is None:
        raise FvError(f"{folder}: none of its {plural(len(paths), 'image')} could be read")
    data = {
        "format": FORMAT, "version": VERSION, "magnitude": magnitude, "colour": colour, "size": size,
        "count": count, "skipped": len(skipped), "folder": os.path.abspath(root), "fv_version": __version__,
    }
    buffer = io.BytesIO()
    torch.save(data, buffer)
    atomic_write(target, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    unreadable = f", {len(skipped)} unreadable skipped" if skipped else ""
    say(f"fv: spectrum of {plural(count, 'image')} at {size} px ({colour}{unreadable}) -> {output}")
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    return Spectrum(magnitude, colour, count, data["folder"], output, digest)
