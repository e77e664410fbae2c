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

This module is the job (its checks, its digest, and the stages in order); collecting is
activation_samples, the layout and cells activation_layout, assembling activation_image.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from fvcli.atlas.activation_image import assemble_folder, write_settings
from fvcli.atlas.activation_layout import (
    ATLAS_VERSION, LAYOUT_FILE, SAMPLES_KEPT, Layout, bin_cells, cosine, umap_layout, umap_missing, whitened,
)
from fvcli.atlas.activation_samples import Sampler
from fvcli.atlas.atlas_memory import check_atlas_memory
from fvcli.atlas.dataset_examples import DEFAULT_INPUT_SIZE, ModelGroup
from fvcli.atlas.receptive_fields import field_sides, grid_of
from fvcli.errors import FvError
from fvcli.files import atomic_write, check_output_folders, read_back
from fvcli.messages import plural
from fvcli.models.layer_keys import ResolvedLayer, input_channels
from fvcli.models.registry import LoadedModel, load_model, model_key
from fvcli.optvis.engine import input_normalization
from fvcli.optvis.images import list_images, upright_size
from fvcli.run.devices import pick_device
from fvcli.run.locks import TakenInTurn
from fvcli.run.resolve import Resolver
from fvcli.specs.limits import MAX_ATLAS_POINTS
from fvcli.specs.requests import CELLS_FILE, JobRequest
from fvcli.specs.settings import AtlasSettings, RunSettings
from fvcli.specs.grammar import parse_target


LAYOUT_LOCK = ".fv-lock.layout"  # held while a shard collects and lays out (see AtlasJob.prepare)


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
        key = model_key(render)
        models = models if models is not None else {}
        if key not in models:
            models[key] = load_model(render.model, render.weights, render.seed, quiet=run.quiet, module=(modules or {}).get(render.model))
        self.model: LoadedModel = models[key]
        if input_channels(self.model.module) not in (1, 3):
            raise FvError(f"{where}an activation atlas reads photos; {render.model} takes {input_channels(self.model.module)} channels")
        self.size = self.model.native_size or DEFAULT_INPUT_SIZE
        self.group = ModelGroup(self.model, self.size, input_normalization(self.model, render.normalize), [])
        resolver = Resolver(self.model, render, lambda layer: (self.group.layer_shape(layer), None))
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
                f"{where}samples: {self.settings.samples} an image, but layer {self.info.name} has "
                f"{plural(count, 'position')} ({self.positions[0]}x{self.positions[1]}); at most {count}"
            )
        if self.settings.class_share != AtlasSettings.class_share and not self.settings.class_target:
            raise FvError(f"{where}class_share is the share a class atlas keeps; set class_target too (such as dense6_1:1 or logit:goldfish)")
        self.class_layer, self.class_index = self._class_output(resolver) if self.settings.class_target else (None, None)
        try:
            self._check_counts(len(self.files), where)
        except FvError:
            if not any(_readable(path) for path in self.files):  # say the cause, not the count
                raise self._none_readable() from None
            raise
        self.device = pick_device(run.device)
        if self.class_layer is not None:
            try:
                self.sampler().check_class_output()
            except FvError as error:
                raise FvError(f"{where}{error}") from None
        check_output_folders([(request.folder, request.origin)], writable=not run.dry_run)

    # ---- validation ----

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
        check_atlas_memory(where, total, self.info.layout.channels, s.n_neighbors, s.whiten)
        if math.floor(total * share) < self._needed():
            kept = f", of which a class atlas keeps {s.class_share:g}" if s.class_target else ""
            raise FvError(
                f"{where}too few samples for a {s.grid}x{s.grid} grid: {plural(images, 'image')} x {s.samples} "
                f"sample{'s' if s.samples != 1 else ''} an image{kept} give {math.floor(total * share)}; it needs at least "
                f"{self._needed()} (one a cell, more than n_neighbors {s.n_neighbors}, and min_count {s.min_count} in a cell): "
                "add images, raise --samples, or lower --grid or --min-count"
            )

    def check_readable(self) -> None:
        """Enough readable images, judged from their headers (no pixels decoded): a folder of
        broken files fails here, before anything is collected."""
        s = self.settings
        share = s.class_share if s.class_target else 1.0
        needed = math.ceil(self._needed() / (s.samples * share))
        readable = 0
        for path in self.files:
            readable += _readable(path)
            if readable >= needed:
                return
        if readable == 0:
            raise self._none_readable()
        self._check_counts(readable, f"{self.where}only {readable} of the {len(self.files)} image files in {self.folder} can be read: ")

    def _none_readable(self) -> FvError:
        return FvError(f"{self.where}images: none of the {plural(len(self.files), 'image file')} in {self.folder} can be read")

    def stand_in(self) -> JobRequest:
        """This job's request with one made-up icon for the cells not laid out yet: planning it checks
        the icons' render options (--diversity-layer, --spectrum, sizes, ...) before anything is
        collected. `random[0]`, not an inline vector: 21,843 channels exceed a target's length."""
        atom = self.request.target.atoms[0]
        target = parse_target(f"direction_neuron({atom.layer}, random[0], cossim_pow={self.settings.cossim_pow:g})")
        return dataclasses.replace(self.request, target=target)

    # ---- what the layout depends on ----

    @property
    def layout_path(self) -> Path:
        return self.request.folder / LAYOUT_FILE

    @property
    def cells_path(self) -> Path:
        return self.request.folder / CELLS_FILE

    @functools.cache  # noqa: B019  (one job object a run: the files' sizes and times, listed once)
    def digest(self) -> str:
        """The sha256 of what the layout and cells depend on (model, layer, images, settings)."""
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
            cells = np.load(io.BytesIO(read_back(self.cells_path)), allow_pickle=False)
        except (OSError, ValueError):
            return None
        return layout if cells.shape == layout.directions.shape and np.array_equal(cells, layout.directions) else None

    def plan(self) -> str:
        s = self.settings
        done = self.ready(self.digest()) is not None
        return (
            f"{self.request.folder}: activation atlas of {self.request.settings.model} {self.info.name}: {s.samples} "
            f"sample{'s' if s.samples != 1 else ''} from each of {plural(len(self.files), 'image')} in {self.folder}, "
            f"{s.grid}x{s.grid} grid" + (", layout already computed" if done else "; the samples are collected and laid out first")
        )

    # ---- collect, lay out, bin ----

    def prepare(self) -> Layout:
        """The layout and cells for this job: those already written when their digest matches,
        else collected and computed now and written (cells file last but one, layout last). Shards
        of a run take turns here, so the first computes them and the others reuse them: the same
        layout for every shard, whatever their devices' arithmetic."""
        with TakenInTurn(self.request.folder, LAYOUT_LOCK):
            return self._prepare()

    def _prepare(self) -> Layout:
        digest = self.digest()
        layout = None if self.run.force else self.ready(digest)
        if layout is not None:
            write_settings(self.request.folder, self.settings_record())
            self.say(f"fv: {self.request.folder}: layout of {plural(len(layout.image), 'sample')} and {plural(len(layout.counts), 'cell')} already computed (--force computes it again)")
            return layout
        self.check_readable()
        seconds = {}
        start = time.perf_counter()
        sampler = self.sampler()
        acts, image, position, attribution = sampler.collect()
        seconds["collect"] = round(time.perf_counter() - start, 3)
        if attribution is not None:
            acts, image, position, attribution = sampler.class_filter(acts, image, position, attribution)
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

    def sampler(self) -> Sampler:
        s = self.settings
        return Sampler(
            self.model, self.group, self.info, self.positions, self.size, self.folder, self.files, s.samples,
            self.request.settings.seed, self.run, self.device, self.request.folder, self.say,
            self.class_layer, self.class_index, s.class_target, s.class_share,
        )

    # ---- assembling ----

    def settings_record(self) -> dict:
        """What atlas-settings.json holds (see write_settings)."""
        return {
            **dataclasses.asdict(self.settings), "layer": self.info.name, "layer_module": self.info.key,
            "seed": self.request.settings.seed, "layer_grid": list(self.positions), "input_size": self.size,
        }

    def assemble(self) -> Path | None:
        """atlas.png and atlas.json, once every icon is rendered (see assemble_folder)."""
        return assemble_folder(self.request.folder, self.say)


def _readable(path: Path) -> bool:
    """Whether an image file's header can be read (no pixels decoded)."""
    try:
        upright_size(path)
        return True
    except Exception:
        return False
