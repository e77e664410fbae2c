"""The files a target reads: direction files (.npy, .pt) and photos (caricatures, inversions).

Each is checked by its size before it is read (a sparse 100 GB file costs nothing on disk), read
once per job, and its sha256 travels with the objectives made from it. Paths are taken as written:
relative to the working directory, in spec files too.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from fvcli.errors import FvError
from fvcli.files import read_at_most
from fvcli.messages import plural
from fvcli.models.layer_keys import ResolvedLayer, channels_first
from fvcli.models.weights import checked_tensor, safe_load
from fvcli.optvis.images import decode_photo
from fvcli.specs.limits import MAX_IMAGE_BYTES, MAX_UNITS, MAX_WEIGHT, show
from fvcli.specs.targets import Atom

# The model run on images: (layer key, images (N, 3, S, S) in [0, 1], input size or None) -> activations.
Forward = Callable[[str, torch.Tensor, int | None], torch.Tensor]


class DirectionFiles:
    """The direction files of one job's targets, each read once. `folder`: where relative paths
    lie (an activation atlas's job folder, which holds its cells file), else the working folder."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder
        self._read: dict[str, tuple[torch.Tensor, str]] = {}  # file -> (K x C matrix, sha256)

    def matrix(self, path: str) -> tuple[torch.Tensor, str]:
        """A direction file as a (K, C) matrix (one vector is K = 1), and its sha256."""
        if path not in self._read:
            self._read[path] = load_directions(str(self.folder / path) if self.folder is not None else path)
        return self._read[path]

    def row(self, atom: Atom) -> torch.Tensor:
        """The one direction of a direction file that `atom` names."""
        matrix, _ = self.matrix(atom.file)
        if atom.rows is None and len(matrix) > 1:  # only the ends of an interpolation get here
            raise FvError(
                f"direction file {atom.file} holds {len(matrix)} directions; name one with [ROW], such as "
                f"{replace(atom, rows=(0,)).describe()}"
            )
        (row,) = atom.rows or (0,)
        vector = matrix[row]
        if not bool(vector.any()):
            if len(matrix) == 1:
                raise FvError(f"direction file {atom.file}: all zeros, which point nowhere; expected a vector with a non-zero entry")
            raise FvError(f"direction file {atom.file}: row {row} is all zeros, which points nowhere; leave it out with [ROWS]")
        return vector

    def rows(self, atom: Atom, width: int) -> tuple[int, ...] | None:
        """The rows of its direction file that `atom` renders: as written, checked against the file,
        or every row of a file of several (None for a file of one vector: one unit, as ever).
        `width`: the channels of the atom's layer."""
        matrix, _ = self.matrix(atom.file)
        count, values = matrix.shape
        if count > 1 and values != width:
            raise FvError(
                f"direction file {atom.file} holds {count} directions of {values} values; "
                f"layer {atom.layer} has {plural(width, 'channel')}"
            )
        if atom.rows is None:
            if count > MAX_UNITS:
                raise FvError(f"direction file {atom.file} holds {count} directions; a job renders at most {MAX_UNITS} units (name rows, such as [0-999])")
            return tuple(range(count)) if count > 1 else None
        bad = [r for r in atom.rows if r >= count]
        if bad:
            raise FvError(f"row {bad[0]} is out of range for direction file {atom.file}, which has {plural(count, 'row')} (0-{count - 1})")
        return atom.rows


class Photos:
    """The photos of one job's caricatures and inversions, each read once, and their activations."""

    def __init__(self, size: int, channels: int, forward: Forward | None):
        """Photos at `size` px for a model of `channels` input channels; `forward` runs it on them."""
        self.size, self.channels, self.forward = size, channels, forward
        self._photos: dict[str, tuple[torch.Tensor, str]] = {}  # file -> (image at the job's size, sha256)
        self._acts: dict[tuple[str, str], torch.Tensor] = {}  # (file, layer key) -> its activations

    def activations(self, atom: Atom, info: ResolvedLayer, input_size: int | None) -> torch.Tensor:
        """The photo's activations at the layer, channels first, (C, positions...): the photo read
        as the model sees images (its centre square at the job's size), run once without gradients."""
        key = (atom.photo, info.key)
        if key not in self._acts:
            assert self.forward is not None, "a Resolver for photos needs a forward function"
            image, _ = self.photo(atom.photo)
            acts = self.forward(info.key, image[None], input_size)
            target = channels_first(acts, info.layout)[0].float()  # on the model's device, where it is compared
            if not bool(target.any()):
                raise FvError(f"photo {atom.photo} gives activations of all zeros at layer {info.name}: nothing to compare with; try another layer")
            self._acts[key] = target
        return self._acts[key]

    def photo(self, path: str) -> tuple[torch.Tensor, str]:
        """A photo as a (C, size, size) image in [0, 1] at the job's size (its luma for a grayscale
        model), and its file's sha256."""
        if path not in self._photos:
            data, digest = read_checked(path, "photo", "an image file such as a JPEG or PNG", MAX_IMAGE_BYTES)
            try:
                image = decode_photo(data, self.size, self.channels)
            except ValueError as error:
                raise FvError(f"photo {path}: {error}") from None
            self._photos[path] = (image, digest)
        return self._photos[path]


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def read_checked(path: str, what: str, expected: str, limit: int) -> tuple[bytes, str]:
    """A file's bytes and their sha256; FvError in one line when it is missing, unreadable, or
    larger than `limit` bytes (from its size, before reading: a sparse file costs nothing on disk)."""
    file = Path(path)
    if not file.exists():
        raise FvError(f"{what} {path} not found (expected {expected})")
    if not file.is_file():
        raise FvError(f"{what} {path} is not a file (expected {expected})")
    try:
        data = read_at_most(file, limit)
    except OSError as error:
        raise FvError(f"{what} {path} cannot be read ({error.strerror or error})") from None
    except ValueError as error:
        raise FvError(f"{what} {path} cannot be read ({error}); expected {expected}") from None
    return data, hashlib.sha256(data).hexdigest()


MAX_DIRECTION_VALUES = 2**27  # 512 MiB of float32: 100,000 directions of 1,342 channels
# A .pt direction file: its values as float64, and room for the archive around them
MAX_DIRECTION_BYTES = MAX_DIRECTION_VALUES * 8 + (1 << 20)


def _check_npy_header(path: str) -> int:
    """A .npy file's size as its header says it must be (header, then shape x dtype bytes), checked
    against the file's own size and the limit on values before the array is read; FvError otherwise."""
    import numpy
    from numpy.lib import format as npy

    try:
        with open(path, "rb") as file:
            version = npy.read_magic(file)
            read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _, dtype = read_header(file)
            start, size = file.tell(), os.fstat(file.fileno()).st_size
    except OSError as error:
        raise FvError(f"direction file {path} cannot be read ({error.strerror or error})") from None
    except Exception:  # not a .npy header: what numpy.load says is reported below
        return -1
    if dtype.hasobject:
        return -1  # numpy.load refuses it, in words of its own
    count = int(numpy.prod(shape, dtype=object))  # exact: no overflow whatever the header says
    if count > MAX_DIRECTION_VALUES:
        raise FvError(f"direction file {path}: {count:,} values; at most {MAX_DIRECTION_VALUES:,}")
    expected = start + count * dtype.itemsize
    if size != expected:
        raise FvError(
            f"direction file {path}: its header says {count:,} values of {dtype} ({expected:,} bytes in all), "
            f"but the file holds {size:,} bytes; it is truncated or damaged"
        )
    return size


def load_directions(path: str) -> tuple[torch.Tensor, str]:
    """A .npy or .pt file of one direction (C,) or of K directions (K, C), as a (K, C) matrix, and
    the file's sha256. Entries are finite and at most MAX_WEIGHT in magnitude (like an inline
    vector's). Pickled objects are refused, in one line."""
    npy = Path(path).suffix.lower() == ".npy"  # a.NPY too: Windows and cameras write upper case
    limit = MAX_DIRECTION_BYTES
    if npy and Path(path).is_file():
        limit = max(_check_npy_header(path), 0) or MAX_DIRECTION_BYTES
    data, digest = read_checked(path, "direction file", "a .npy or .pt file of one vector, or a K x C matrix of K vectors", limit)
    refused = "not a tensor file fv can load safely (only tensors saved with torch.save are read; pickled objects are refused)"
    if npy:
        import numpy

        try:
            array = numpy.load(io.BytesIO(data), allow_pickle=False)
            if array.dtype.kind not in "biuf":  # complex, strings, dates: nothing to cast silently
                raise FvError(f"direction file {path}: an array of {array.dtype} values; expected real numbers")
            if array.size > MAX_DIRECTION_VALUES:
                raise FvError(f"direction file {path}: {array.size:,} values; at most {MAX_DIRECTION_VALUES:,}")
            matrix = torch.as_tensor(array, dtype=torch.float32)
        except ValueError as error:
            if not data.startswith(b"\x93NUMPY"):  # numpy takes any other bytes for a pickle
                reason = "it is not a .npy file"
            elif "allow_pickle" in str(error):
                reason = "it holds Python objects, which fv does not load"
            else:
                reason = _first_line(error)
            raise FvError(f"direction file {path}: not an array of numbers fv can read ({reason})") from None
        except FvError:
            raise
        except Exception as error:
            raise FvError(f"direction file {path} cannot be read ({_first_line(error)})") from None
    else:
        try:
            loaded = safe_load(io.BytesIO(data))
        except ValueError as error:
            damaged = str(error) == "it is truncated or damaged"
            raise FvError(f"direction file {path}: {error if damaged else refused}") from None
        try:  # before .float(): an expanded (stride 0) tensor is small on disk
            matrix = checked_tensor(loaded, MAX_DIRECTION_VALUES, "it").float()
        except ValueError as error:
            raise FvError(f"direction file {path}: {error}") from None
    if matrix.dim() == 1:
        matrix = matrix[None]
    if matrix.dim() != 2 or len(matrix) == 0:
        raise FvError(f"direction file {path}: an array of shape {tuple(matrix.shape)}; expected one vector (C,) or K vectors as a K x C matrix")
    if not bool(torch.all(matrix.abs() <= MAX_WEIGHT)):  # NaN fails too
        bad = matrix[~(matrix.abs() <= MAX_WEIGHT)][0].item()
        raise FvError(f"direction file {path}: holds {bad:g}; expected finite numbers of magnitude at most {show(MAX_WEIGHT)}")
    return matrix, digest
