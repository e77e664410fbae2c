"""Activation atlases (Carter, Armstrong, Schubert, Johnson, Olah, "Activation Atlas", Distill 2019):
the space of what a layer represents, from the activations of a folder of images.

    collect   the layer's activation vectors at `samples` random positions of every image, read
              as fv examples reads images (the model's preprocessing, in batches); for a class
              atlas, only the samples of highest attribution to a class output
    layout    UMAP (umap-learn, cosine metric, seeded) to 2-D; clipped to the 1st-99th
              percentiles with a 10% margin and scaled to [0, 1], as Lucid's recipe does
    cells     the layout binned into grid x grid cells; each cell with at least `min_count`
              samples keeps the average of their activations (times the inverse covariance of
              the layer's activations with `whiten`): one row of the cells file
    render    the icons are the ordinary units of `direction_neuron(LAYER, 'atlas-cells.npy',
              cossim_pow=P)`, one a row, rendered by fv's runner (batches, resume, shards)
    assemble  atlas.png (each icon in its cell), atlas.json (every cell's position, count, top
              channels, samples, objective) and a strip of each cell's sample crops

The layout and cells are written into the job's folder (atomically) with a digest of everything
they depend on, so a resumed or sharded run, and every shard, reuses them instead of collecting
again; UMAP is seeded, so shards that each compute them compute the same.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import math
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from fvcli.version import __version__
from fvcli.atlas.dataset_examples import DEFAULT_INPUT_SIZE, ModelGroup, field_sides, grid_of
from fvcli.errors import FvError
from fvcli.files import atomic_write, check_output_folders
from fvcli.messages import plural, progress_bar
from fvcli.models.capture import forward_to, layer_shapes
from fvcli.models.layer_keys import LayerError, ResolvedLayer, channels_first, input_channels
from fvcli.models.registry import LoadedModel, load_model
from fvcli.optvis.engine import input_normalization
from fvcli.optvis.images import Placement, list_images, load_image, open_upright, upright_size
from fvcli.run.devices import pick_device
from fvcli.run.jobs import stable_seed
from fvcli.run.output import BACKGROUND, GAP, SCHEMA_VERSION, save_png, write_json
from fvcli.run.resolve import Resolver
from fvcli.specs.limits import MAX_ATLAS_POINTS
from fvcli.specs.requests import CELLS_FILE, JobRequest
from fvcli.specs.settings import EXAMPLES_CPU_BATCH, EXAMPLES_CUDA_BATCH, AtlasSettings, RunSettings
from fvcli.specs.targets import parse_target

ATLAS_VERSION = 1  # raise when the same images, model and settings give another layout or cells
LAYOUT_FILE = "atlas-layout.npz"  # the samples, their layout and the cells: what the icons are made from
SIDECAR = "atlas.json"
IMAGE = "atlas.png"
SAMPLES_FOLDER = "atlas-samples"  # a strip of sample crops per cell, so the web atlas shows them from inside OUT
SAMPLES_KEPT = 8  # samples listed (and cropped) per cell: those nearest the cell's average
TOP_CHANNELS = 5  # channels listed per cell: the largest entries of its average
MARGIN = 0.1  # of the clipped layout's extent, on each side (Lucid's normalize_layout)
PERCENTILES = (1.0, 99.0)
WHITEN_RIDGE = 1e-3  # of the covariance's mean eigenvalue, added before inverting it
CROP = 48  # px: sample crops in the strips
ICON_FIELD = 1.5  # the atlas shows each icon's centre square of 1.5 times the layer's receptive field
EMPTY = (236, 236, 236)  # an atlas cell without an icon
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
            with np.load(path, allow_pickle=False) as data:
                if int(data["version"]) != ATLAS_VERSION or (digest is not None and str(data["digest"]) != digest):
                    return None
                return cls(
                    str(data["digest"]), [str(f) for f in data["files"]], data["image"], data["position"], data["layout"],
                    data["attribution"] if "attribution" in data.files else None, data["cell_rows"],
                    data["cell_columns"], data["counts"], data["averages"], data["directions"], data["nearest"],
                    int(data["box_side"]), json.loads(str(data["seconds"])),
                )
        except (OSError, ValueError, KeyError, EOFError):
            return None


class AtlasJob:
    """One activation atlas job: construct (validates everything, reads no image's pixels), then
    `prepare()` (collect and lay out, or reuse what is written), render its request as any job,
    then `assemble()`."""

    def __init__(
        self, request: JobRequest, run: RunSettings, say: Callable[[str], None], modules: dict | None = None,
        models: dict | None = None,
    ):
        assert request.atlas is not None
        self.request, self.run, self.say = request, run, say
        self.settings: AtlasSettings = request.atlas
        where = f"{request.origin}: " if request.origin else ""
        self.where = where
        missing = umap_missing()
        if missing:
            raise FvError(f"{where}{missing}")
        self.folder = Path(self.settings.images)
        if not self.folder.is_dir():
            raise FvError(f"{where}images: not a folder: {self.folder}")
        self.files = list_images(self.folder)
        if not self.files:
            raise FvError(f"{where}images: no images in {self.folder} (JPEG or PNG files, searched recursively)")
        render = request.settings
        key = (render.model, render.weights, render.seed if render.weights == "random" else None)
        models = models if models is not None else {}
        if key not in models:
            models[key] = load_model(render.model, render.weights, render.seed, quiet=run.quiet, module=(modules or {}).get(render.model))
        self.model: LoadedModel = models[key]
        if input_channels(self.model.module) not in (1, 3):
            raise FvError(f"{where}an activation atlas reads photos; {render.model} takes {input_channels(self.model.module)} channels")
        self.size = self.model.native_size or DEFAULT_INPUT_SIZE
        self.group = ModelGroup(self.model, self.size, input_normalization(self.model, render.normalize), [])
        resolver = Resolver(self.model, render, lambda layer: (self._probe(layer), None))
        try:
            self.info: ResolvedLayer = resolver.layer(request.atlas_layer)
        except FvError as error:
            raise FvError(f"{where}{error}") from None
        grid = grid_of(self.info)
        if self.info.layout.kind == "tokens" and grid is None:
            raise FvError(f"{where}layer {self.info.name}: its tokens form no square grid of positions to sample")
        self.positions = grid or (1, 1)
        count = self.positions[0] * self.positions[1]
        if self.settings.samples > count:
            raise FvError(
                f"{where}samples: {self.settings.samples} a image, but layer {self.info.name} has "
                f"{plural(count, 'position')} ({self.positions[0]}x{self.positions[1]}); at most {count}"
            )
        self.class_layer, self.class_index = self._class_output(resolver) if self.settings.class_target else (None, None)
        self._check_counts(len(self.files), where)
        self.device = pick_device(run.device)
        check_output_folders([(request.folder, request.origin)], writable=not run.dry_run)

    # ---- validation ----

    def _probe(self, key: str) -> tuple[int, ...]:
        try:
            return layer_shapes(self.model.module, [key], self.size, torch.device("cpu"))[key]
        except LayerError:
            raise
        except ValueError as error:
            raise FvError(str(error)) from None
        except Exception as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise FvError(f"{self.model.name} cannot compute layer {key} on a {self.size} px image ({first})") from None

    def _class_output(self, resolver: Resolver) -> tuple[ResolvedLayer, int]:
        """The output a class atlas attributes to: `LAYER:N` (a channel, its mean over positions) or
        `logit:CLASS` (the model's output)."""
        text = self.settings.class_target
        try:
            target = parse_target(text)
        except ValueError as error:
            raise FvError(f"{self.where}class_target: {error}") from None
        atom = target.simple if hasattr(target, "simple") else None
        try:
            if atom is not None and atom.kind == "logit":
                return resolver.output(atom), resolver.class_index(atom)
            if atom is not None and atom.kind == "channel" and atom.channels is not None and len(atom.channels) == 1:
                info = resolver.layer(atom.layer)
                if atom.channels[0] >= info.layout.channels:
                    raise FvError(f"channel {atom.channels[0]} is out of range: {info.name} has {plural(info.layout.channels, 'channel')}")
                return info, atom.channels[0]
        except FvError as error:
            raise FvError(f"{self.where}class_target {text}: {error}") from None
        raise FvError(f"{self.where}class_target: expected one output, such as dense6_1:1 or logit:goldfish, got {text!r}")

    def _needed(self) -> int:
        """Samples a layout needs: a sample a cell on average, and more than UMAP's neighbours."""
        s = self.settings
        return max(s.grid * s.grid, s.n_neighbors + 2, s.min_count)

    def _check_counts(self, images: int, where: str) -> None:
        s = self.settings
        share = s.class_share if s.class_target else 1.0
        total = images * s.samples
        if total > MAX_ATLAS_POINTS:
            raise FvError(f"{where}{total:,} samples ({images:,} images x {s.samples}); an atlas lays out at most {MAX_ATLAS_POINTS:,}: lower --samples")
        if math.floor(total * share) < self._needed():
            kept = f", of which a class atlas keeps {s.class_share:g}" if s.class_target else ""
            raise FvError(
                f"{where}too few samples for a {s.grid}x{s.grid} grid: {plural(images, 'image')} x {s.samples} "
                f"sample{'s' if s.samples != 1 else ''} an image{kept} give {math.floor(total * share)}; it needs at least "
                f"{self._needed()} (one a cell, and more than n_neighbors {s.n_neighbors}): add images, raise --samples or lower --grid"
            )

    def check_readable(self) -> None:
        """Enough readable images, judged from their headers (no pixels decoded): a folder of
        broken files fails here, before anything is collected."""
        s = self.settings
        share = s.class_share if s.class_target else 1.0
        needed = math.ceil(self._needed() / (s.samples * share))
        readable = 0
        for path in self.files:
            try:
                upright_size(path)
                readable += 1
            except Exception:
                continue
            if readable >= needed:
                return
        if readable == 0:
            raise FvError(f"{self.where}images: none of the {plural(len(self.files), 'image file')} in {self.folder} can be read")
        self._check_counts(readable, f"{self.where}only {readable} of the {len(self.files)} image files in {self.folder} can be read: ")

    # ---- what the layout depends on ----

    @property
    def layout_path(self) -> Path:
        return self.request.folder / LAYOUT_FILE

    @property
    def cells_path(self) -> Path:
        return self.request.folder / CELLS_FILE

    def digest(self) -> str:
        listing = []
        for path in self.files:
            stat = path.stat()
            listing.append((path.relative_to(self.folder).as_posix(), stat.st_size, stat.st_mtime_ns))
        s, render = self.settings, self.request.settings
        identity = {
            "atlas_version": ATLAS_VERSION,
            "model": render.model, "weights": self.model.weights, "weights_sha256": self.model.weights_sha256,
            "layer": self.info.key, "input_size": self.size, "normalization": self.group.normalization,
            "images": str(self.folder), "listing": listing, "samples": s.samples, "seed": render.seed,
            "umap": {"n_neighbors": s.n_neighbors, "min_dist": s.min_dist, "metric": "cosine"},
            "grid": s.grid, "min_count": s.min_count, "whiten": s.whiten,
            "class": None if s.class_target is None else {"target": s.class_target, "share": s.class_share},
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()

    def ready(self, digest: str) -> Layout | None:
        """The layout already written for this digest, with its cells file, or None."""
        layout = Layout.load(self.layout_path, digest)
        if layout is None or not self.cells_path.is_file():
            return None
        try:
            cells = np.load(self.cells_path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        return layout if cells.shape == layout.directions.shape and np.array_equal(cells, layout.directions) else None

    def plan(self) -> str:
        s = self.settings
        done = self.ready(self.digest()) is not None
        return (
            f"{self.request.folder}: activation atlas of {self.request.settings.model} {self.info.name}: {s.samples} "
            f"sample{'s' if s.samples != 1 else ''} from each of {plural(len(self.files), 'image')} in {self.folder}, "
            f"{s.grid}x{s.grid} grid" + (", layout already computed" if done else "")
        )

    # ---- collect, lay out, bin ----

    def prepare(self) -> Layout:
        """The layout and cells for this job: those already written when their digest matches,
        else collected and computed now and written (cells file last but one, layout last)."""
        digest = self.digest()
        layout = None if self.run.force else self.ready(digest)
        if layout is not None:
            write_settings(self.request.folder, self.settings_record())
            self.say(f"fv: {self.request.folder}: layout of {plural(len(layout.image), 'sample')} and {plural(len(layout.counts), 'cell')} already computed (--force computes it again)")
            return layout
        self.check_readable()
        seconds = {}
        start = time.perf_counter()
        acts, image, position, attribution = self.collect()
        seconds["collect"] = round(time.perf_counter() - start, 3)
        if attribution is not None:
            acts, image, position, attribution = self._class_filter(acts, image, position, attribution)
        if len(acts) < self._needed():
            raise FvError(
                f"{self.where}only {len(acts)} samples with a non-zero activation vector were collected; "
                f"a {self.settings.grid}x{self.settings.grid} grid needs {self._needed()}: add images, raise --samples or lower --grid"
            )
        start = time.perf_counter()
        self.say(f"fv: {self.request.folder}: laying out {plural(len(acts), 'sample')} of {self.info.name} with UMAP")
        xy = umap_layout(acts, self.settings.n_neighbors, self.settings.min_dist, self.request.settings.seed)
        seconds["layout"] = round(time.perf_counter() - start, 3)
        rows, columns, counts, averages, members = bin_cells(xy, acts, self.settings.grid, self.settings.min_count)
        if not len(counts):
            raise FvError(
                f"{self.where}no cell of the {self.settings.grid}x{self.settings.grid} grid holds {self.settings.min_count} "
                "samples; lower --min-count or --grid, or add images"
            )
        directions = whitened(averages, acts) if self.settings.whiten else averages
        nearest = np.full((len(counts), SAMPLES_KEPT), -1, dtype=np.int64)
        for k, indices in enumerate(members):
            similarity = cosine(acts[indices], averages[k : k + 1])[:, 0]
            best = indices[np.argsort(-similarity, kind="stable")[:SAMPLES_KEPT]]
            nearest[k, : len(best)] = best
        side = field_sides(self.model.module, [self.info], self.size, self.group.prepare, self.device)[self.info.key]
        layout = Layout(
            digest, [p.relative_to(self.folder).as_posix() for p in self.files], image, position, xy.astype(np.float32),
            attribution, rows, columns, counts, averages.astype(np.float32), directions.astype(np.float32), nearest, side, seconds,
        )

        def write_cells(tmp: Path) -> None:
            with open(tmp, "wb") as file:
                np.save(file, layout.directions)

        atomic_write(self.cells_path, write_cells)
        write_settings(self.request.folder, self.settings_record())
        layout.save(self.layout_path)
        self.say(
            f"fv: {self.request.folder}: {plural(len(counts), 'cell')} of {self.settings.grid}x{self.settings.grid} hold "
            f"at least {self.settings.min_count} of the {len(acts)} samples (collected in {seconds['collect']:.1f} s, "
            f"laid out in {seconds['layout']:.1f} s) -> {CELLS_FILE}"
        )
        return layout

    def _batch_size(self) -> int:
        if self.run.batch_size:
            return self.run.batch_size
        return EXAMPLES_CUDA_BATCH if self.device.type == "cuda" else EXAMPLES_CPU_BATCH

    def _positions(self, index: int) -> np.ndarray:
        """The positions sampled in image `index`: random, distinct, from the seed and the image's
        name alone (the same whatever the batch)."""
        rows, columns = self.positions
        name = self.files[index].relative_to(self.folder).as_posix()
        rng = np.random.default_rng(stable_seed(f"fv-atlas/{self.request.settings.seed}/{name}"))
        return rng.choice(rows * columns, size=self.settings.samples, replace=False)

    def collect(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Stream the images through the model to the layer (and on to the class output for a class
        atlas): (activations (N, C), image index (N,), position [y, x] (N, 2), attribution or None).
        Samples whose activation vector is all zeros (a cosine cannot place them) are left out."""
        module = self.model.module.to(self.device, memory_format=torch.channels_last)
        batch = self._batch_size()
        acts, images, positions, attributions = [], [], [], []
        skipped = 0
        layers = [self.info.key] + ([self.class_layer.key] if self.class_layer is not None else [])
        bar = progress_bar(self.run.progress, self.run.quiet, total=len(self.files), unit="img", desc=f"{self.info.name} atlas: collect"[:40])
        with bar, ThreadPoolExecutor(4) as pool:
            for start in range(0, len(self.files), batch):
                chunk = list(range(start, min(len(self.files), start + batch)))
                loaded = list(pool.map(lambda i: _try_load(self.files[i], self.size), chunk))
                kept = [(i, image) for i, image in zip(chunk, loaded) if image is not None]
                skipped += len(chunk) - len(kept)
                bar.update(len(chunk))
                if not kept:
                    continue
                x = self.group.prepare(torch.stack([image for _, image in kept]).to(self.device))
                values, attribution = self._forward(module, x, layers)
                flat = values.reshape(values.shape[0], values.shape[1], -1)  # (B, C, P)
                for row, (index, _) in enumerate(kept):
                    chosen = self._positions(index)
                    acts.append(flat[row][:, chosen].T.numpy())
                    images.append(np.full(len(chosen), index))
                    positions.append(np.stack(np.divmod(chosen, self.positions[1]), axis=1))
                    if attribution is not None:
                        attributions.append(attribution[row].reshape(-1)[chosen].numpy())
        if skipped:
            self.say(f"fv: skipped {skipped} unreadable image file{'s' if skipped != 1 else ''} in {self.folder}")
        acts_all = np.concatenate(acts).astype(np.float32)
        image_all, position_all = np.concatenate(images), np.concatenate(positions)
        attribution_all = np.concatenate(attributions).astype(np.float32) if attributions else None
        alive = np.linalg.norm(acts_all, axis=1) > 0
        keep = lambda a: None if a is None else a[alive]  # noqa: E731
        return acts_all[alive], image_all[alive], position_all[alive], keep(attribution_all)

    def _forward(self, module: torch.nn.Module, x: torch.Tensor, layers: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The layer's activations (B, C, positions...) on the CPU and, for a class atlas, the
        attribution of the class output to each position: activation x gradient, summed over channels."""
        if self.class_layer is None:
            with torch.no_grad():
                out = forward_to(module, x, layers)[self.info.key]
            return channels_first(out, self.info.layout).float().cpu(), None
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            out = forward_to(module, x, layers)
            a = out[self.info.key]
            c = channels_first(out[self.class_layer.key], self.class_layer.layout).float()
            score = c.reshape(c.shape[0], c.shape[1], -1)[:, self.class_index].mean(dim=1)
            (grad,) = torch.autograd.grad(score.sum(), a)
        a, grad = channels_first(a.detach(), self.info.layout).float(), channels_first(grad, self.info.layout).float()
        return a.cpu(), (a * grad).sum(dim=1).cpu()

    def _class_filter(self, acts, image, position, attribution):
        """A class atlas keeps the share of samples of highest attribution (and above 0)."""
        count = max(1, math.floor(len(acts) * self.settings.class_share))
        order = np.argsort(-attribution, kind="stable")[:count]
        order = np.sort(order[attribution[order] > 0])
        self.say(
            f"fv: {self.request.folder}: class atlas of {self.settings.class_target}: keeping {len(order)} of "
            f"{len(acts)} samples, those of highest attribution"
        )
        return acts[order], image[order], position[order], attribution[order]

    # ---- assembling ----

    def settings_record(self) -> dict:
        """What atlas-settings.json holds (see write_settings)."""
        import dataclasses

        return {
            **dataclasses.asdict(self.settings), "layer": self.info.name, "layer_module": self.info.key,
            "seed": self.request.settings.seed, "layer_grid": list(self.positions), "input_size": self.size,
        }

    def assemble(self) -> Path | None:
        """atlas.png and atlas.json, once every icon is rendered (see assemble_folder)."""
        return assemble_folder(self.request.folder, self.say)


def _try_load(path: Path, size: int) -> torch.Tensor | None:
    try:
        return load_image(path, size)
    except Exception:  # any decoder's failure: the image is skipped and counted
        return None


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


def exact_neighbours(acts: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray, None]:
    """Each row's k nearest rows by cosine distance (itself first), as UMAP takes them: (indices,
    distances, no search index). Distances are rounded to 1e-9 and ties go to the lower index, so
    BLAS's thread count cannot change the graph."""
    a = acts.astype(np.float64)
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-300)
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
    a = acts.astype(np.float64)
    covariance = a.T @ a / len(a)
    ridge = WHITEN_RIDGE * np.trace(covariance) / len(covariance)
    inverse = np.linalg.inv(covariance + ridge * np.eye(len(covariance)))
    return averages @ inverse


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) cosine similarities between rows."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


# ---- assembling the atlas from the rendered icons ----


def is_atlas_folder(folder: Path) -> bool:
    return (folder / LAYOUT_FILE).is_file() and (folder / CELLS_FILE).is_file()


def assemble_folder(folder: Path, say: Callable[[str], None]) -> Path | None:
    """Write atlas.png, atlas.json and the sample strips of an atlas job folder whose icons are all
    rendered (its grid.json lists them); None when they are not (yet)."""
    folder = Path(folder)
    layout = Layout.load(folder / LAYOUT_FILE)
    try:
        sidecar = json.loads((folder / "grid.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if layout is None:
        return None
    start = time.perf_counter()
    units = {unit.get("direction"): unit for unit in sidecar.get("units", [])}
    if set(units) != set(range(len(layout.counts))):
        return None
    settings = sidecar.get("settings", {})
    icon_size = int(settings.get("size") or 0)
    grid = int(_atlas_settings(folder).get("grid", 0)) or int(max(layout.cell_rows.max(), layout.cell_columns.max()) + 1)
    atlas = Image.new("RGB", (grid * icon_size, grid * icon_size), EMPTY)
    # The icon objective reads the centre position, which sees only the layer's receptive field:
    # the atlas shows that part of each icon (ICON_FIELD times the field), enlarged to the cell.
    input_size = int(_atlas_settings(folder).get("input_size") or icon_size)
    crop = max(1, min(icon_size, round(ICON_FIELD * layout.box_side * icon_size / input_size)))
    images_folder = Path(_atlas_settings(folder).get("images", ""))
    cells = []
    for k in range(len(layout.counts)):
        unit = units[k]
        row, column = int(layout.cell_rows[k]), int(layout.cell_columns[k])
        icon_name = unit.get("image")
        if icon_name:
            with Image.open(folder / icon_name) as icon:
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
    _sample_strips(folder, images_folder, layout, cells, sidecar)
    seconds = dict(layout.seconds)
    seconds["render"] = (sidecar.get("timing") or {}).get("seconds")
    seconds["assemble"] = round(time.perf_counter() - start, 3)
    atlas_settings = _atlas_settings(folder)
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
    """The atlas settings, as the prepare step wrote them beside the layout."""
    try:
        return json.loads((folder / "atlas-settings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_settings(folder: Path, values: dict) -> None:
    """atlas-settings.json: the atlas options of the job and what assembling it needs later (fv
    merge has no model): the layer's grid of positions and the model's input size."""
    text = json.dumps(values, indent=2, sort_keys=True) + "\n"
    path = folder / "atlas-settings.json"
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _opaque(icon: Image.Image) -> Image.Image:
    if icon.mode in ("RGBA", "LA"):
        grey = Image.new("RGBA", icon.size, (128, 128, 128, 255))
        grey.alpha_composite(icon.convert("RGBA"))
        return grey.convert("RGB")
    return icon.convert("RGB")


def _sample_strips(folder: Path, images: Path, layout: Layout, cells: list[dict], sidecar: dict) -> None:
    """A strip of each cell's sample crops (SAMPLES_FOLDER), cut from the original images around
    each sample's position, as dataset examples are; a sample whose file is gone is a dark gap."""
    stored = _atlas_settings(folder)
    rows_cols = tuple(stored["layer_grid"]) if stored.get("layer_grid") else None
    size = int(stored.get("input_size") or 0)
    opened: dict[int, Image.Image | None] = {}
    for cell in cells:
        samples = [i for i in layout.nearest[cell["unit"]] if i >= 0]
        strip = Image.new("RGB", (max(1, len(samples)) * (CROP + GAP) - GAP, CROP), BACKGROUND)
        for slot, i in enumerate(samples):
            index = int(layout.image[i])
            if index not in opened:
                try:
                    opened[index] = open_upright(images / layout.files[index])
                except Exception:
                    opened[index] = None
            original = opened[index]
            entry = cell["samples"][slot]
            if original is None or rows_cols is None or not size:
                entry["box"] = None
                continue
            y, x = (int(v) for v in layout.position[i])
            box = _box(y, x, rows_cols, size, layout.box_side)
            entry["box"] = Placement(*original.size, size).to_original(box)
            strip.paste(original.crop(tuple(entry["box"])).resize((CROP, CROP), Image.Resampling.LANCZOS), (slot * (CROP + GAP), 0))
        buffer = io.BytesIO()
        strip.save(buffer, format="PNG")
        path = folder / cell["samples_strip"]
        try:
            if path.read_bytes() == buffer.getvalue():
                continue
        except OSError:
            pass
        atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    _prune_strips(folder, {cell["samples_strip"] for cell in cells})


def _prune_strips(folder: Path, kept: set[str]) -> None:
    for path in (folder / SAMPLES_FOLDER).glob("cell_*.png"):
        if f"{SAMPLES_FOLDER}/{path.name}" not in kept:
            path.unlink(missing_ok=True)


def _box(y: int, x: int, grid: tuple[int, int], size: int, side: int) -> tuple[float, float, float, float]:
    rows, columns = grid
    cy, cx = (y + 0.5) * size / rows, (x + 0.5) * size / columns
    left = min(max(cx - side / 2, 0.0), size - side)
    top = min(max(cy - side / 2, 0.0), size - side)
    return (left, top, left + side, top + side)


def _rounded(value: float) -> float:
    return float(f"{value:.5g}")


# ---- how well the icons stand for their cells ----


def nearest_cell_share(folder: Path, module: torch.nn.Module, normalization, layer_key: str, layout_kind: str | None = None) -> dict:
    """For each rendered icon of an atlas folder: its activation at the layer's centre position
    (where its objective reads), and whether that is closer (cosine) to its own cell's average than
    to any other kept cell's. Returns {"share": the fraction that are, "cells": K, "nearest_own":
    count, "misses": [units]}. `module` is the model as loaded (load_model(...).module)."""
    from fvcli.models.layer_keys import at_position, infer_layout

    folder = Path(folder)
    layout = Layout.load(folder / LAYOUT_FILE)
    sidecar = json.loads((folder / "grid.json").read_text(encoding="utf-8"))
    units = sorted((u for u in sidecar["units"] if u.get("image")), key=lambda u: u["direction"])
    pixels = []
    for unit in units:
        with Image.open(folder / unit["image"]) as icon:
            pixels.append(torch.from_numpy(np.asarray(_opaque(icon), dtype=np.float32) / 255).permute(2, 0, 1))
    x = torch.stack(pixels)
    if normalization is not None:
        mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in normalization)
        x = (x - mean) / std
    device = next(iter(module.parameters())).device
    with torch.no_grad():
        out = forward_to(module, x.to(device), [layer_key])[layer_key]
    a = at_position(channels_first(out, infer_layout(tuple(out.shape))).float(), None).cpu().numpy()
    similarity = cosine(a.reshape(len(a), -1), layout.averages)
    own = np.array([u["direction"] for u in units])
    hits = similarity.argmax(axis=1) == own
    return {
        "share": float(hits.mean()) if len(hits) else 0.0, "cells": int(len(layout.counts)),
        "nearest_own": int(hits.sum()), "misses": [int(u) for u in own[~hits]],
    }
