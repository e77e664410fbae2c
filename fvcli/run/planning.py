"""Planning a run: every job resolved against its model and checked before anything renders.

Models load once each; every target resolves into units (one objective an image), layer shapes
are probed (fvcli.run.shapes), and --init photos, --spectrum files, --alpha, --diversity and the
output folders are checked. Everything that can be wrong with the input fails here, so bad input
never leaves partial output.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import torch

from fvcli.errors import FvError
from fvcli.files import check_output_folders
from fvcli.models.layer_keys import input_channels, split_key
from fvcli.models.registry import LoadedModel, load_model, model_key
from fvcli.optvis.engine import activations, input_normalization
from fvcli.optvis.images import Photo, load_photo
from fvcli.optvis.spectrum import Spectrum, check_fits, read_spectrum
from fvcli.optvis.transforms import Pipeline, sizing
from fvcli.run.devices import pick_device
from fvcli.run.jobs import Job, Unit
from fvcli.run.resolve import Resolver, unit_name, unit_seed
from fvcli.run.shapes import ShapeProbe
from fvcli.specs.requests import JobRequest
from fvcli.specs.settings import RenderSettings, RunSettings


class Plan:
    """The run's device, its models (by model key) and its jobs, resolved and checked."""

    def __init__(
        self, requests: list[JobRequest], settings: RunSettings, say: Callable[[str], None],
        modules: dict[str, torch.nn.Module] | None = None, models: dict[tuple, LoadedModel] | None = None,
    ):
        """`modules`: model objects in memory (the Python API) by the model names the requests use.
        `models`: models loaded already, by model key (an activation atlas's), used and added to."""
        self.settings, self.modules = settings, modules or {}
        self.device = pick_device(settings.device)
        self.shapes = ShapeProbe(self.device, say)
        self.models: dict[tuple, LoadedModel] = models if models is not None else {}
        self.placed: set[tuple] = set()  # the models on this run's device
        self.photos: dict[tuple[str, int, int], Photo] = {}  # (path, size, channels): each --init photo, read once
        self.load_seconds = 0.0
        self.unnormalized: list[LoadedModel] = []
        self.jobs = [self._resolve(index, request) for index, request in enumerate(requests)]
        check_output_folders([(job.folder, job.request.origin) for job in self.jobs], writable=not settings.dry_run)

    def normalization_hints(self) -> list[str]:
        """A line for each model that declares no normalization, said once a run has rendered (so
        that an error stays one line)."""
        return [
            f"fv: {model.name} declares no input normalization, so it is fed [0, 1] RGB; if it was trained on "
            "normalized inputs, give --normalize imagenet (or MEAN,MEAN,MEAN/STD,STD,STD), or have its factory "
            "return (module, {'mean': ..., 'std': ...})"
            for model in self.unnormalized
        ]

    def model_of(self, job: Job) -> LoadedModel:
        return self.models[model_key(job.request.settings)]

    def _model(self, settings: RenderSettings) -> LoadedModel:
        key = model_key(settings)
        if key not in self.placed:  # loaded here, or by an activation atlas before the run
            started = time.perf_counter()
            if key not in self.models:
                self.models[key] = load_model(
                    settings.model, settings.weights, settings.seed, quiet=self.settings.quiet, module=self.modules.get(settings.model)
                )
                if self._unnormalized(self.models[key], settings):
                    self.unnormalized.append(self.models[key])
            self.models[key].module.to(self.device, memory_format=torch.channels_last)
            self.placed.add(key)
            self.load_seconds += time.perf_counter() - started
        return self.models[key]

    @staticmethod
    def _unnormalized(model: LoadedModel, settings: RenderSettings) -> bool:
        """A model that declares no normalization sees [0, 1] RGB: right for some, but a network
        trained on normalized inputs draws weak images so, and nothing else would tell."""
        return settings.normalize == "model" and model.normalization is None and input_channels(model.module) == 3

    def _resolve(self, index: int, request: JobRequest) -> Job:
        model = self._model(request.settings)
        size_from = "--size" if request.size_given else "default"
        if not request.size_given and model.native_size:
            # The network's own input size (a factory's `size`, a known model's), as fv examples uses.
            request = dataclasses.replace(request, settings=dataclasses.replace(request.settings, size=model.native_size))
            size_from = "model"
        settings = request.settings
        where = f"{request.origin}: " if request.origin else ""
        canvas = Pipeline.from_setting(settings.transforms, sizing(model.native_size, settings.size)).canvas(settings.size, settings.size)[0]
        try:
            normalization = input_normalization(model, settings.normalize)  # fits the model's channels
        except FvError as error:
            raise FvError(f"{where}{error}") from None

        def forward(key: str, images: torch.Tensor, input_size: int | None) -> torch.Tensor:
            return activations(model, images.to(self.device), (key,), normalization, input_size)[key]

        probe = lambda key: self.shapes.layer(model, key, settings.size, canvas)  # noqa: E731
        # An activation atlas's icons name its cells file in the job's folder, wherever --out lies.
        resolver = Resolver(model, settings, probe, forward, request.folder if request.atlas is not None else None)
        photo = self._init_photo(model, settings, where)
        try:
            resolved = resolver.units(request.target)
            layer = resolver.main_layer(request.target)
        except FvError as error:
            raise FvError(f"{where}{error}") from None
        diversity_layer = self._diversity_layer(resolver, layer, settings, where)
        width = max(4, len(str(max((r.key or 0) for r in resolved))), len(str(layer.layout.channels - 1)) if layer else 0)
        units = []
        classes = _class_names(model, layer)
        for i, r in enumerate(resolved):
            image, label = unit_name(request.target, r.key, width)
            if classes is not None and r.key is not None and label == str(r.key):
                label = f"{r.key} {classes[r.key]}"  # a class logit: its name beside its index
            objectives = r.objectives if len(r.objectives) > 1 else r.objectives * settings.diversity
            images = (image,) if len(objectives) == 1 else tuple(image.replace(".png", f"_{k}.png") for k in range(len(objectives)))
            seed = unit_seed(settings.seed, r.canonical)
            units.append(Unit(index, i, r.key, seed, objectives, images, label, r.description, shared=r.shared, by_direction=r.by_direction))
        if settings.param in ("maco", "cppn") and any(unit.shared for unit in units):
            held = "a fixed magnitude spectrum" if settings.param == "maco" else "a network's output"
            raise FvError(
                f"{where}interpolate(...) aligns its frames with shared low-resolution images, which {settings.param}'s "
                f"images ({held}) cannot take in; use --param fourier, pixel, lowres or laplacian"
            )
        return Job(
            request, tuple(units), layer, resolver.input_size, diversity_layer, tuple(resolver.read_as.items()),
            photo, self._spectrum(settings, model, where), size_from,
        )

    @staticmethod
    def _diversity_layer(resolver: Resolver, layer, settings: RenderSettings, where: str):
        """Where --diversity measures style: --diversity-layer, else the job's layer (or, for a flat
        layer, the last layer with positions before it)."""
        if settings.diversity <= 1:
            return None
        try:
            found = resolver.layer(settings.diversity_layer) if settings.diversity_layer else layer
        except FvError as error:
            raise FvError(f"{where}--diversity-layer: {error}") from None
        if not settings.diversity_layer and found is not None and found.layout.kind == "flat":
            found = resolver.positions_before(found)
        if found is None or found.layout.kind == "flat":
            raise FvError(f"{where}--diversity needs a layer with positions for its Gram matrices; set --diversity-layer")
        return found

    def _init_photo(self, model: LoadedModel, settings: RenderSettings, where: str) -> Photo | None:
        """FvError unless --alpha and --init fit the model's channels; the --init photo."""
        channels = input_channels(model.module)
        if settings.alpha and channels not in (1, 3):
            raise FvError(
                f"{where}--alpha writes RGBA or gray+alpha PNGs; {model.name} takes images of {channels} channels, "
                "and --alpha needs an RGB or grayscale model"
            )
        if not settings.init:
            return None
        key = (settings.init, settings.size, channels)
        if key not in self.photos:
            try:
                self.photos[key] = load_photo(settings.init, settings.size, channels)
            except FvError as error:
                raise FvError(f"{where}{error}") from None
        return self.photos[key]

    @staticmethod
    def _spectrum(settings: RenderSettings, model: LoadedModel, where: str) -> Spectrum | None:
        """The --spectrum file of a maco job, read and checked against the model's channels."""
        if settings.spectrum is None:
            return None
        try:
            spectrum = read_spectrum(settings.spectrum)
            check_fits(spectrum, input_channels(model.module), settings.decorrelate)
        except FvError as error:
            raise FvError(f"{where}{error}") from None
        return spectrum


def _class_names(model: LoadedModel, layer) -> tuple[str, ...] | None:
    """The class names of a job whose layer is the model's own output with one entry per class."""
    if layer is None or layer.layout.kind != "flat" or split_key(layer.key)[0] != "" or model.categories is None:
        return None
    return model.categories if len(model.categories) == layer.layout.channels else None
