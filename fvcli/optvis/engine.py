"""The engine: optimize a batch of images, one per objective, on one device. No files, no click.

One forward/backward pass per step optimizes every image of the batch; the forward pass stops at
the deepest layer the objectives read. Each image's initial state and transforms derive from its
own seed, so an image does not depend on the rest of its batch. The model runs in channels_last
layout, under bf16 autocast where the hardware does bf16 natively (see precision.use_bf16); the
image parameters and the optimizer stay in float32.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from fvcli.optvis import regularizers, transparency
from fvcli.models.capture import forward_to
from fvcli.errors import FvError
from fvcli.models.layer_keys import input_channels
from fvcli.messages import plural
from fvcli.models.registry import LoadedModel
from fvcli.models.normalization import IMAGENET, Normalization
from fvcli.optvis.objectives import Objective, batch_plan, batch_values, layers_of, photo_terms
from fvcli.optvis.precision import use_bf16
from fvcli.optvis.diversity import gram_similarity
from fvcli.optvis.param import PHOTO_PLACEMENT, SharedParam, make_param
from fvcli.optvis.prelu import FrozenPReLU, has_prelu
from fvcli.optvis.redirect import REDIRECT_STEPS, RedirectReLU
from fvcli.specs.settings import RenderSettings
from fvcli.optvis.transforms import FULL, SIZED, Draws, Pipeline, Sizing, sizing


class Stopped(Exception):
    """Raised between steps when the caller asked to stop (a signal): the batch is abandoned."""


@dataclass
class BatchResult:
    images: Tensor  # (N, C, H, W) float32 in [0, 1], on the CPU; C: the model's image channels, and alpha last with --alpha
    start: list[float]  # each objective on its initial image, untransformed
    final: list[float]  # each objective on its final image, untransformed
    errors: list[str | None]  # per image: why it failed, or None
    similarity: list[float | None] | None = None  # per group with diversity: final Gram similarity
    steps: dict[int, Tensor] = field(default_factory=dict)  # --save-steps: step -> (N, C, H, W) on the CPU
    alpha: Tensor | None = None  # --alpha-map: (N, 1, H, W) in [0, 1] on the CPU
    upscaled: Tensor | None = None  # --cppn-upscale K: (N, C, K*H, K*W) in [0, 1] on the CPU


@dataclass(frozen=True)
class Groups:
    """Images that belong together: the images of one unit, in batch positions.

    `diversity` (layer key, layout, weight): push each group's images apart in style.
    `shared`: give each group a shared low-resolution image, so its images (frames) stay aligned.
    """

    members: tuple[tuple[int, ...], ...]
    diversity: tuple[str, object, float] | None = None
    shared: bool = False


def input_normalization(model: LoadedModel, setting) -> Normalization | None:
    """The (mean, std) images are normalized with before the model, from the `normalize` setting;
    one value per image channel (or one for all), else FvError."""
    if setting == "model":
        chosen = model.normalization
    elif setting == "imagenet":
        chosen = IMAGENET
    elif setting == "none":
        chosen = None
    else:
        chosen = setting
    channels = input_channels(model.module)
    if chosen is not None and len(chosen[0]) not in (1, channels):
        given = "imagenet" if setting == "imagenet" else f"{len(chosen[0])} means and standard deviations"
        raise FvError(
            f"--normalize {given} does not fit {model.name}, whose images have {plural(channels, 'channel')}; "
            f"give {'one' if channels == 1 else f'1 or {channels}'}, or none"
        )
    return chosen


def dtype_name(settings: RenderSettings, device: torch.device) -> str:
    return "bfloat16-autocast" if use_bf16(settings.dtype, device) else "float32"


def describe(settings: RenderSettings, device: torch.device, normalization: Normalization | None, channels: int = 3, spectrum=None, scale: Sizing = FULL) -> dict:
    """Every setting that changes the image, with the values the engine uses, for the sidecar.
    `spectrum`: the --spectrum file as read (fvcli.optvis.spectrum.Spectrum); `scale`: the
    standard transforms' sizing (fvcli.optvis.transforms.sizing)."""
    param = make_param(settings.param, [0], 8, settings.decorrelate, channels, settings.alpha, spectrum)
    described = {
        "steps": settings.steps,
        "size": settings.size,
        "lr": settings.lr,
        "optimizer": settings.optimizer,
        "schedule": settings.schedule,
        "seed": settings.seed,
        "parameterization": param.describe(),
        "transforms": Pipeline.from_setting(settings.transforms, scale).describe(),
        "transforms_preset": scale.preset(settings.transforms) if isinstance(settings.transforms, str) else "custom",
        "transforms_sized_by": scale.describe() if settings.transforms in SIZED else None,
        "penalties": {"l1": settings.l1, "tv": settings.tv, "blur": settings.blur},
        "blur_every": settings.blur_every,
        "normalization": None if normalization is None else {"mean": normalization[0], "std": normalization[1]},
        "objective": settings.objective,
        "tokens": settings.tokens,
        "relu_redirect_steps": REDIRECT_STEPS,
        "dtype": dtype_name(settings, device),
        "save_steps": list(settings.save_steps),
        "pre_relu": settings.pre_relu,
        "alpha_map": {"accumulated": "|input gradient| summed over channels and steps", "normalized": f"divided by its {ALPHA_PERCENTILE}th percentile, clipped to 1", "written_as": "the image with the map as its opacity (times the image's own with --alpha)"} if settings.alpha_map else None,
        "cppn_upscale": settings.cppn_upscale,
    }
    if settings.alpha:
        described["alpha"] = transparency.describe(settings.alpha_weight)
    if settings.init:  # the sidecar adds the photo's sha256
        described["init"] = {"photo": settings.init, "weight": settings.init_weight, "placed_in": PHOTO_PLACEMENT.get(settings.param)}
    return described


def _optimizer(settings: RenderSettings, param: torch.nn.Module) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(param.parameters(), lr=settings.lr)
    return torch.optim.Adam(param.parameters(), lr=settings.lr)


def _schedule(settings: RenderSettings, optimizer: torch.optim.Optimizer):
    if settings.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.steps)
    return None


# MaCo's authors show the accumulated gradients clipped at their 80th percentile (Horama's plot_maco):
# where the model looks most saturates, and the rest keeps its gradation.
ALPHA_PERCENTILE = 80


def alpha_maps(accumulated: Tensor) -> Tensor:
    """(N, 1, H, W) accumulated |gradients| as maps in [0, 1], each divided by its own percentile."""
    flat = accumulated.flatten(1).float()
    k = max(1, math.ceil(flat.shape[1] * ALPHA_PERCENTILE / 100))  # kthvalue: quantile refuses large inputs
    level = flat.kthvalue(k, dim=1).values.clamp_min(1e-30).view(-1, 1, 1, 1)
    return (accumulated / level).clamp(0, 1)


def _finite(grad: Tensor) -> Tensor:
    """A NaN in the model reaches other images' pixel gradients as 0 * NaN; zero it there, before
    the parameterization mixes colours and frequencies, so that only the image whose own objective
    is NaN fails (its value stays NaN and is reported)."""
    return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


def _model_input(images: Tensor, mean: Tensor | None, std: Tensor | None, input_size: int | None) -> Tensor:
    """Images in [0, 1] as the model takes them: resized to its one input size (if it has one), normalized."""
    if input_size is not None and images.shape[-2:] != (input_size, input_size):
        images = F.interpolate(images, size=(input_size, input_size), mode="bilinear", align_corners=False)
    x = images if mean is None else (images - mean) / std
    # channels_last on every device: CUDA's tensor cores want it, and on CPUs oneDNN's
    # max pooling is about 20 times faster with it (measured in benchmarks/BENCHMARKS.md).
    return x.contiguous(memory_format=torch.channels_last)


def _mean_std(normalization: Normalization | None, device: torch.device) -> tuple[Tensor | None, Tensor | None]:
    if normalization is None:
        return None, None
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in normalization)
    return mean, std


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _seen(module: torch.nn.Module, images: Tensor, layers: tuple[str, ...], mean, std, input_size: int | None, bf16: bool = False) -> dict[str, Tensor]:
    """Activations at `layers` of images in [0, 1], prepared as the steps prepare theirs, without
    gradients: what the model sees of a photo."""
    with torch.no_grad(), _autocast(images.device, bf16):
        return forward_to(module, _model_input(images, mean, std, input_size), layers)


def activations(
    model: LoadedModel, images: Tensor, layers: tuple[str, ...], normalization: Normalization | None, input_size: int | None
) -> dict[str, Tensor]:
    """The model's activations at `layers` for images in [0, 1] (on the model's device), in float32
    and without gradients: what a photo's activations are."""
    seen = _seen(model.module, images, layers, *_mean_std(normalization, images.device), input_size)
    return {k: v.float() for k, v in seen.items()}


class _Scorer:
    """Normalize, run the model to the needed layers, and score each image by its objective."""

    def __init__(self, model: LoadedModel, objectives: list[Objective], device: torch.device, normalization, input_size, bf16: bool):
        self.module, self.objectives, self.device, self.input_size = model.module, objectives, device, input_size
        self.layers = layers_of(objectives)
        self.bf16 = bf16
        self.plan = batch_plan(objectives, device)
        self.mean, self.std = _mean_std(normalization, device)
        self.prelu = has_prelu(self.module)  # their backward pass is fvcli.optvis.prelu's (the same gradients, faster)

    def __call__(
        self, images: Tensor, extra: tuple[str, ...] = (), forward: Callable | None = None, photos: dict | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Each image's objective value, and the captured activations (with the `extra` layers).
        `forward`: a compiled forward for exactly these layers (fvcli.models.compiled); else eager.
        `photos`: per image, its photos' activations through its transforms (PhotoSteps)."""
        x = _model_input(images, self.mean, self.std, self.input_size)
        autocast = _autocast(self.device, self.bf16)
        if forward is not None:
            with autocast:
                acts = forward(x)
        else:
            prelu = FrozenPReLU() if self.prelu and torch.is_grad_enabled() else contextlib.nullcontext()
            with autocast, prelu:
                acts = forward_to(self.module, x, (*self.layers, *extra))
        return batch_values(self.objectives, acts, self.plan, photos), acts

    def photos_seen(self, photos: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        """Activations of transformed photos at `layers`, without gradients (they are targets)."""
        return _seen(self.module, photos, layers, self.mean, self.std, self.input_size, self.bf16)


class PhotoSteps:
    """The photos that caricatures and inversions compare with, put through the same transforms as
    their images at every step (each photo drawn with its image's seed), so that the image and the
    photo are compared position by position as the model sees both: one forward pass more a step,
    without gradients, for the photos of the batch."""

    def __init__(self, objectives: list[Objective], seeds: list[int], device: torch.device):
        self.uses = [(row, term) for row, o in enumerate(objectives) for term in photo_terms(o)]
        if self.uses:
            self.photos = torch.stack([term.photo for _, term in self.uses]).to(device)
            self.draws = Draws([seeds[row] for row, _ in self.uses], device)
            self.layers = tuple(dict.fromkeys(term.layer for _, term in self.uses))

    def __call__(self, score: _Scorer, pipeline: Pipeline, step: int) -> dict[int, dict[str, Tensor]] | None:
        if not self.uses:
            return None
        acts = score.photos_seen(pipeline(self.photos, self.draws, step), self.layers)
        seen: dict[int, dict[str, Tensor]] = {}
        for j, (row, term) in enumerate(self.uses):
            seen.setdefault(row, {})[term.photo_key] = acts[term.layer][j : j + 1]
        return seen


def render_batch(
    model: LoadedModel,
    objectives: list[Objective],
    seeds: list[int],
    settings: RenderSettings,
    device: torch.device,
    on_step: Callable[[int], None] | None = None,
    input_size: int | None = None,
    groups: Groups | None = None,
    should_stop: Callable[[], bool] | None = None,
    compiled: Callable | None = None,
    init: Tensor | None = None,
    spectrum=None,
) -> BatchResult:
    """Optimize one image per objective for `settings.steps` steps; the model must be on `device`.

    `input_size`: for models that take one input size only, images are resized to it before the model.
    `groups`: images that belong together (diversity, shared frames); see Groups.
    `should_stop`: asked after every step; when it says yes, Stopped is raised.
    `compiled`: a compiled forward of the objectives' layers (and the diversity layer), used once
    the ReLU redirect's first steps are done (its function mode does not trace).
    `init`: the photo (C, size, size) in [0, 1] every image starts from (`settings.init`); with
    `settings.init_weight`, the mean squared difference from it is penalized.
    With `settings.alpha`, images have an alpha plane, last: the model sees them over random
    backgrounds while optimizing, and over grey for the values reported (fvcli.optvis.transparency).
    `spectrum`: for maco, the --spectrum file as read (None: the power law).
    """
    assert len(objectives) == len(seeds) > 0
    bf16 = use_bf16(settings.dtype, device)
    score = _Scorer(model, objectives, device, input_normalization(model, settings.normalize), input_size, bf16)
    channels = input_channels(model.module)
    param = make_param(settings.param, seeds, settings.size, settings.decorrelate, channels, settings.alpha, spectrum).to(device)
    if groups is not None and groups.shared:
        param = SharedParam(param, groups.members, seeds).to(device)
    if init is not None:
        init = init.to(device)
        param.start_from_(init)
    diversity = groups.diversity if groups is not None else None
    extra = (diversity[0],) if diversity else ()
    pipeline = Pipeline.from_setting(settings.transforms, sizing(model.native_size, settings.size, input_size))
    draws = Draws(seeds, device)  # each image's transforms from its own seed, for all steps at once
    photo_steps = PhotoSteps(objectives, seeds, device)
    backgrounds = transparency.Backgrounds(draws, settings.size, channels) if settings.alpha else None

    def measured(image: Tensor) -> Tensor:
        """What the values before and after are measured on: with alpha, the image over grey."""
        return transparency.composite(image, transparency.MEASURED_OVER) if settings.alpha else image

    optimizer = _optimizer(settings, param)
    schedule = _schedule(settings, optimizer)
    penalty_weights = {"l1": settings.l1, "tv": settings.tv, "blur": settings.blur}

    with torch.no_grad():
        start, _ = score(measured(param()))
    # The first step at which each image's objective was not finite, kept on the device (no sync).
    broke_at = torch.full((len(objectives),), -1, dtype=torch.long, device=device)
    save_steps, snapshots = set(settings.save_steps), {}
    # --alpha-map: the gradients that reach the image through the model (not the penalties'),
    # as MaCo accumulates them: where the model looks.
    attribution = torch.zeros(len(seeds), 1, settings.size, settings.size, device=device) if settings.alpha_map else None

    def attribute(grad: Tensor) -> None:
        attribution.add_(_finite(grad.detach()).abs().sum(dim=1, keepdim=True))

    for step in range(settings.steps):
        optimizer.zero_grad(set_to_none=True)
        image = param()
        image.register_hook(_finite)
        composited = transparency.composite(image, backgrounds(step)) if backgrounds is not None else image
        if attribution is not None:
            composited = composited.view_as(composited)
            composited.register_hook(attribute)
        images = pipeline(composited, draws, step)
        photos = photo_steps(score, pipeline, step)
        if step < REDIRECT_STEPS:
            with RedirectReLU():
                values, acts = score(images, extra, photos=photos)
        else:
            values, acts = score(images, extra, compiled, photos=photos)
        broke_at = torch.where((broke_at < 0) & ~torch.isfinite(values.detach()), step + 1, broke_at)
        if settings.alpha:
            values = transparency.opacity_penalized(values, image, transparency.ramped(settings.alpha_weight, step, settings.steps))
        if init is not None and settings.init_weight:
            values = values - settings.init_weight * (image[:, :channels] - init).pow(2).flatten(1).mean(dim=1)
        penalties = regularizers.penalty(image, penalty_weights)
        if penalties is not None:
            values = values - penalties
        total = values.sum()
        if diversity:
            key, layout, weight = diversity
            for group in groups.members:
                # Scaled by the group's objective size (held constant), so that the weight means
                # the same for every model, whatever its activations' scale.
                scale = values[list(group)].detach().abs().mean().clamp_min(1e-6)
                total = total - weight * scale * gram_similarity(acts[key][list(group)], layout)
        (-total).backward()  # the one place objectives are negated: the optimizer minimizes
        optimizer.step()
        if schedule is not None:
            schedule.step()
        if settings.blur_every and (step + 1) % settings.blur_every == 0:
            param.blur_(regularizers.BLUR_SIGMA)
        if step + 1 in save_steps:  # the image as it is now; only at these steps, so it costs nothing else
            with torch.no_grad():
                snapshots[step + 1] = param().float().cpu()
        if on_step is not None:
            on_step(step + 1)
        if should_stop is not None and should_stop():
            raise Stopped
    with torch.no_grad():
        images = param().float()
        final, acts = score(measured(images), extra)
        similarity = None
        if diversity:
            key, layout, _ = diversity
            similarity = [
                gram_similarity(acts[key][list(group)], layout).item() if len(group) > 1 else None
                for group in groups.members
            ]

    start_list, final_list = start.float().cpu().tolist(), final.float().cpu().tolist()
    finite_images = torch.isfinite(images).flatten(1).all(dim=1).cpu().tolist()
    errors = []
    for ok, value, step in zip(finite_images, final_list, broke_at.cpu().tolist()):
        if ok and torch.isfinite(torch.tensor(value)):
            errors.append(None)
        elif step > 0:
            errors.append(f"the objective became NaN or infinite at step {step}")
        else:
            errors.append("the objective or the image became NaN or infinite")
    alpha = None if attribution is None else alpha_maps(attribution).cpu()
    upscaled = None
    if settings.cppn_upscale > 1:
        upscaled = param.image_at(settings.size * settings.cppn_upscale).float().cpu()
    return BatchResult(images.cpu(), start_list, final_list, errors, similarity, snapshots, alpha, upscaled)
