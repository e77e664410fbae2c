"""An activation atlas's layout: UMAP to 2-D, normalized and binned into cells, and what is kept.

    layout    UMAP (umap-learn, cosine metric, seeded) to 2-D; clipped to the 1st-99th
              percentiles with a 10% margin and scaled to [0, 1], as Lucid's recipe does
    cells     the layout binned into grid x grid cells; each cell with at least `min_count`
              samples keeps the average of their activations (times the inverse covariance of
              the layer's activations with `whiten`): one row of the cells file

The samples, their layout and the cells are saved together (Layout, atlas-layout.npz) with the
digest of everything they depend on, so resumed and sharded runs reuse them.
"""

from __future__ import annotations

import importlib.util
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fvcli.atlas.atlas_memory import NEIGHBOUR_ROWS
from fvcli.files import atomic_write, parse_json, read_back

ATLAS_VERSION = 1  # raise when the same images, model and settings give another layout or cells
LAYOUT_FILE = "atlas-layout.npz"  # the samples, their layout and the cells: what the icons are made from
SAMPLES_KEPT = 8  # samples listed (and cropped) per cell: those nearest the cell's average
MARGIN = 0.1  # of the clipped layout's extent, on each side (Lucid's normalize_layout)
PERCENTILES = (1.0, 99.0)
WHITEN_RIDGE = 1e-3  # of the covariance's mean eigenvalue, added before inverting it
WHITENING = (
    "the icon direction is W v, W the inverse of the layer's uncentred activation covariance over the "
    "samples (A^T A / n, plus 1e-3 of its mean eigenvalue on the diagonal), as Lucid's atlas recipe "
    "whitens: icons maximize dot(a, W v) x max(0.1, cos(a, W v))^P"
)


def umap_missing() -> str | None:
    """One line saying how to install umap-learn, or None when it is there."""
    if importlib.util.find_spec("umap") is None:
        return (
            "activation atlases lay activations out with UMAP, and umap-learn is not installed; "
            "pip install 'umap-learn>=0.5' (or pip install -e '.[atlas]')"
        )
    return None


@dataclass
class Layout:
    """What collecting and laying out produced; the job's atlas-layout.npz holds it."""

    digest: str
    files: list[str]  # the images, relative to the folder, in sorted order
    image: np.ndarray  # (N,) int: each sample's image, an index into `files`
    position: np.ndarray  # (N, 2) int: each sample's [y, x] on the layer's grid
    layout: np.ndarray  # (N, 2) float: each sample's place in [0, 1]^2 (x, y)
    attribution: np.ndarray | None  # (N,) for a class atlas: each kept sample's attribution
    cell_rows: np.ndarray  # (K,) int: each kept cell's row (y) in the grid
    cell_columns: np.ndarray  # (K,) int
    counts: np.ndarray  # (K,) int: samples in each kept cell
    averages: np.ndarray  # (K, C) float: each kept cell's average activation
    directions: np.ndarray  # (K, C): what each icon maximizes (the average, or whitened)
    nearest: np.ndarray  # (K, SAMPLES_KEPT) int: each cell's samples nearest its average (-1: none)
    box_side: int  # px of the model's input: the side of a sample's crop
    seconds: dict  # collect and layout times of the run that computed it

    def save(self, path: Path) -> None:
        arrays = {
            "digest": np.array(self.digest), "files": np.array(self.files, dtype=str), "image": self.image,
            "position": self.position, "layout": self.layout, "cell_rows": self.cell_rows,
            "cell_columns": self.cell_columns, "counts": self.counts, "averages": self.averages,
            "directions": self.directions, "nearest": self.nearest, "box_side": np.array(self.box_side),
            "seconds": np.array(json.dumps(self.seconds)), "version": np.array(ATLAS_VERSION),
        }
        if self.attribution is not None:
            arrays["attribution"] = self.attribution

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as file:
                np.savez(file, **arrays)

        atomic_write(path, write)

    @classmethod
    def load(cls, path: Path, digest: str | None = None) -> Layout | None:
        """The layout at `path` (for exactly this digest, when given), or None."""
        try:
            with np.load(io.BytesIO(read_back(path)), allow_pickle=False) as data:
                if int(data["version"]) != ATLAS_VERSION or (digest is not None and str(data["digest"]) != digest):
                    return None
                layout = cls(
                    str(data["digest"]), [str(f) for f in data["files"]], data["image"], data["position"], data["layout"],
                    data["attribution"] if "attribution" in data.files else None, data["cell_rows"],
                    data["cell_columns"], data["counts"], data["averages"], data["directions"], data["nearest"],
                    int(data["box_side"]), parse_json(str(data["seconds"])),
                )
        except Exception:  # missing, cut (zipfile.BadZipFile), damaged: laid out again
            return None
        return layout if layout.consistent() else None

    def consistent(self) -> bool:
        """Whether every array has the kind, shape and range the layout's parts need of each other:
        a file edited with its digest kept (`nearest` out of range, `files` cut, `counts` as text,
        a negative side) is damaged, not an IndexError in assembling."""
        n, k = len(self.image), len(self.counts)

        def ints(a: np.ndarray, shape: tuple, low: int, high: int) -> bool:
            return a.dtype.kind in "iu" and a.shape == shape and (a.size == 0 or (a.min() >= low and a.max() < high))

        def reals(a: np.ndarray, shape: tuple) -> bool:
            return a.dtype.kind == "f" and a.shape == shape and bool(np.isfinite(a).all())

        channels = self.averages.shape[1] if self.averages.ndim == 2 else -1
        return (
            n > 0 and k > 0 and channels > 0 and isinstance(self.seconds, dict)
            and ints(self.image, (n,), 0, len(self.files)) and ints(self.position, (n, 2), 0, 1 << 20)
            and reals(self.layout, (n, 2)) and ints(self.cell_rows, (k,), 0, 1 << 20) and ints(self.cell_columns, (k,), 0, 1 << 20)
            and ints(self.counts, (k,), 1, n + 1) and reals(self.averages, (k, channels)) and reals(self.directions, (k, channels))
            and ints(self.nearest, (k, SAMPLES_KEPT), -1, n) and 0 < self.box_side <= 1 << 20
            and (self.attribution is None or reals(self.attribution, (n,)))
        )


EXACT_NEIGHBOURS = 50_000  # samples up to which fv finds the exact nearest neighbours itself (see umap_layout)


def umap_layout(acts: np.ndarray, n_neighbors: int, min_dist: float, seed: int) -> np.ndarray:
    """UMAP's 2-D layout of the rows of `acts` (cosine metric, seeded: the same input gives the
    same layout), normalized as Lucid's recipe does: clipped to the 1st-99th percentiles with a
    10% margin on each side, then scaled to [0, 1] on each axis. (N, 2): x, y.

    Up to EXACT_NEIGHBOURS samples, the k nearest neighbours are found exactly (cosine, float64)
    and handed to UMAP (`precomputed_knn`): the graph its approximate search (NN-descent) aims
    at, found in a second or two, and without compiling that search (numba), which took 55 of a
    first fit's 75 s here. Beyond it, UMAP searches itself."""
    k = min(n_neighbors, len(acts) - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap's notes on n_jobs under a random_state, numba's on threads
        import umap

        knn = exact_neighbours(acts, k) if len(acts) <= EXACT_NEIGHBOURS else (None, None, None)
        reducer = umap.UMAP(
            n_components=2, n_neighbors=k, min_dist=min_dist, metric="cosine", random_state=seed % 2**32,
            precomputed_knn=knn, verbose=False,
        )
        xy = reducer.fit_transform(acts).astype(np.float64)
    return normalize_layout(xy)


def exact_neighbours(acts: np.ndarray, k: int, chunk: int | None = None) -> tuple[np.ndarray, np.ndarray, None]:
    """Each row's k nearest rows by cosine distance (itself first), as UMAP takes them: (indices,
    distances, no search index). Distances are rounded to 1e-9 and ties go to the lower index, so
    BLAS's thread count cannot change the graph."""
    a = acts.astype(np.float64)
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-300)
    chunk = chunk or max(1, min(1024, NEIGHBOUR_ROWS // len(a)))  # blocks of bounded size (atlas_memory)
    indices = np.empty((len(a), k), dtype=np.int64)
    distances = np.empty((len(a), k), dtype=np.float32)
    for start in range(0, len(a), chunk):
        d = np.round(1.0 - a[start : start + chunk] @ a.T, 9)
        rows = np.arange(len(d))
        d[rows, start + rows] = -1.0  # itself first, whatever rounding says
        near = np.argpartition(d, k, axis=1)[:, : k + 1] if k + 1 < d.shape[1] else np.tile(np.arange(d.shape[1]), (len(d), 1))
        near_d = np.take_along_axis(d, near, 1)
        order = np.lexsort((near, near_d), axis=1)[:, :k]
        indices[start : start + len(d)] = np.take_along_axis(near, order, 1)
        distances[start : start + len(d)] = np.maximum(np.take_along_axis(near_d, order, 1), 0.0)
    return indices, distances, None


def normalize_layout(xy: np.ndarray) -> np.ndarray:
    low, high = np.percentile(xy, PERCENTILES[0], axis=0), np.percentile(xy, PERCENTILES[1], axis=0)
    extent = high - low
    low, high = low - MARGIN * extent, high + MARGIN * extent
    clipped = np.clip(xy, low, high)
    clipped = clipped - clipped.min(axis=0)
    top = clipped.max(axis=0)
    return clipped / np.where(top > 0, top, 1.0)


def bin_cells(xy: np.ndarray, acts: np.ndarray, grid: int, min_count: int):
    """The kept cells, row-major: rows, columns, counts, averages (K, C), and each cell's samples."""
    columns = np.minimum((xy[:, 0] * grid).astype(np.int64), grid - 1)
    rows = np.minimum((xy[:, 1] * grid).astype(np.int64), grid - 1)
    cell = rows * grid + columns
    kept_rows, kept_columns, counts, averages, members = [], [], [], [], []
    order = np.argsort(cell, kind="stable")
    bounds = np.searchsorted(cell[order], np.arange(grid * grid + 1))
    for index in range(grid * grid):
        indices = order[bounds[index] : bounds[index + 1]]
        if len(indices) >= min_count:
            kept_rows.append(index // grid)
            kept_columns.append(index % grid)
            counts.append(len(indices))
            averages.append(acts[indices].astype(np.float64).mean(axis=0))
            members.append(indices)
    width = acts.shape[1]
    return (
        np.array(kept_rows, dtype=np.int64), np.array(kept_columns, dtype=np.int64), np.array(counts, dtype=np.int64),
        np.array(averages).reshape(-1, width), members,
    )


def whitened(averages: np.ndarray, acts: np.ndarray) -> np.ndarray:
    """Each average times the inverse of the uncentred covariance of the activations (see WHITENING)."""
    covariance = np.zeros((acts.shape[1], acts.shape[1]))
    # In float64 a block of 256 samples at a time: no copy of all of them, and no C call so long
    # that SIGTERM waits for it (fv's handler runs between calls)
    for start in range(0, len(acts), 256):
        block = acts[start : start + 256].astype(np.float64)
        covariance += block.T @ block
    covariance /= len(acts)
    ridge = WHITEN_RIDGE * np.trace(covariance) / len(covariance)
    # One C call that SIGTERM waits for (fv's handler runs between calls): at most 4,096 channels
    # (atlas_memory.MAX_WHITEN_CHANNELS), 4.5 s here; 12,000 channels took 2.5 minutes.
    inverse = np.linalg.inv(covariance + ridge * np.eye(len(covariance)))
    return averages @ inverse


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) cosine similarities between rows."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T
