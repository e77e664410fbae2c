"""Models: a registry of known networks, factories, the three weight sources, and layer names.

A loaded model is in eval mode with no parameter gradients, and carries its input normalization
and the identity of its weights (for the sidecar). Layers are named by `named_modules()` paths;
a model may add aliases (GoogLeNet accepts the article's `mixed4a` for torchvision's `inception4a`).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import importlib
import importlib.util
import io
import re
import socket
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch
from torch import nn

from fvcli.errors import FvError
from fvcli.layers import hookable_modules

Normalization = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per input channel
IMAGENET: Normalization = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DOWNLOAD_TIMEOUT_S = 60
CALIBRATION_IMAGES = 8  # random images that set BatchNorm statistics for --weights random
CALIBRATION_SIZE = 128


@dataclass(frozen=True)
class Published:
    """Published weights: where they are, and the preprocessing the network was trained with."""

    identity: str  # for the sidecar: "ResNet50_Weights.IMAGENET1K_V2", or the file's name
    url: str
    normalization: Normalization | None
    native_size: int | None  # the input size of training, used when a model takes one size only
    check_hash: bool = True  # torchvision's file names carry a hash prefix
    categories: tuple[str, ...] | None = None  # class names, for logit:NAME

    @property
    def filename(self) -> str:
        return Path(urlparse(self.url).path).name


@dataclass(frozen=True)
class ModelEntry:
    """A named model: how to build its architecture and which weights are published for it."""

    name: str
    architecture: str  # what the network is, for the sidecar
    build: Callable[[], nn.Module]  # the architecture; its init does not matter
    published: Callable[[str], Published]  # a weights name (DEFAULT, IMAGENET1K_V2, ...) -> Published
    aliases: dict[str, str] = field(default_factory=dict)


# Build options that keep a torchvision architecture the same whatever its weights: the published
# GoogLeNet and Inception v3 weights expect transform_input=True; auxiliary heads never run in eval.
_BUILD_OPTIONS = {
    "googlenet": {"aux_logits": False, "transform_input": True, "init_weights": False},
    "inception_v3": {"aux_logits": False, "transform_input": True, "init_weights": False},
}
_AUXILIARY_HEADS = ("aux1.", "aux2.", "AuxLogits.")  # in published state dicts, not in the models above
_NOTES = {
    "googlenet": "torchvision GoogLeNet (batch norm, transform_input=True, 1000 classes; not the article's InceptionV1)",
}
ALIASES = {
    "googlenet": {
        "conv2d0": "conv1",
        "conv2d1": "conv2",
        "conv2d2": "conv3",
        **{f"mixed{b}": f"inception{b}" for b in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")},
    },
}


def _torchvision_published(model: str, enum: Any, name: str) -> Published:
    member = _weights_member(model, enum, name)
    preprocess = member.transforms()
    normalization = (tuple(float(v) for v in preprocess.mean), tuple(float(v) for v in preprocess.std))
    size = getattr(preprocess, "crop_size", None)
    categories = member.meta.get("categories")
    return Published(
        str(member), member.url, normalization, int(size[0]) if size else None,
        categories=tuple(categories) if categories else None,
    )


def _weights_member(model: str, enum: Any, name: str) -> Any:
    """`DEFAULT`, `IMAGENET1K_V2` or `ResNet50_Weights.IMAGENET1K_V2` as a member of `enum`."""
    prefix, _, member = name.rpartition(".")
    if prefix and prefix != enum.__name__:
        raise FvError(f"--weights {name}: these are not weights of {model}, whose weights are {enum.__name__}.*")
    member = member.upper() if member.lower() == "default" else member
    if member not in enum.__members__:
        names = ", ".join(m for m in enum.__members__)
        raise FvError(f"--weights {name}: {model} has no such weights; it has {names}, random, or a state-dict file")
    return enum[member]


@functools.cache
def torchvision_models() -> tuple[str, ...]:
    import torchvision.models

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def _torchvision_entry(name: str) -> ModelEntry | None:
    import torchvision.models as tvm

    if name not in torchvision_models():
        return None
    builder, enum = tvm.get_model_builder(name), tvm.get_model_weights(name)
    options = _BUILD_OPTIONS.get(name, {})
    return ModelEntry(
        name=name,
        architecture=_NOTES.get(name, f"torchvision {name}"),
        build=lambda: builder(weights=None, **options),
        published=lambda weights: _torchvision_published(name, enum, weights),
        aliases=ALIASES.get(name, {}),
    )


def _inceptionv1_entry() -> ModelEntry:
    from fvcli import inceptionv1

    published = Published(
        inceptionv1.WEIGHTS_FILE, inceptionv1.WEIGHTS_URL, inceptionv1.NORMALIZATION, native_size=224, check_hash=False
    )

    def pick(name: str) -> Published:
        if name.upper() != "DEFAULT":
            raise FvError(f"--weights {name}: inceptionv1 has one set of published weights, default (inception5h.pth)")
        return published

    return ModelEntry(
        name="inceptionv1",
        architecture="the article's InceptionV1 (inception5h: local response normalization, 1008 classes, mixed4a 508 channels)",
        build=inceptionv1.build_inceptionv1,
        published=pick,
    )


# Networks fv defines itself, next to torchvision's.
OWN_MODELS: dict[str, Callable[[], ModelEntry]] = {"inceptionv1": _inceptionv1_entry}


def find_entry(name: str) -> ModelEntry | None:
    """The registry entry of a model name, or None when fv does not know it."""
    if name in OWN_MODELS:
        return OWN_MODELS[name]()
    return _torchvision_entry(name)


def known_models() -> list[str]:
    return sorted([*OWN_MODELS, *torchvision_models()])


@dataclass
class LoadedModel:
    """A model ready to render: eval mode, frozen parameters, known normalization and weights."""

    name: str
    module: nn.Module
    architecture: str
    weights: str  # "random(seed=0)", a torchvision weights name, or "file:<path>"
    weights_sha256: str | None = None
    normalization: Normalization | None = None  # None: the model takes [0, 1] RGB as it is
    native_size: int | None = None  # the input size of training, for models that take one size only
    aliases: dict[str, str] = field(default_factory=dict)
    categories: tuple[str, ...] | None = None  # class names of the output, where known

    def layer_names(self) -> list[str]:
        return [name for name, _ in hookable_modules(self.module)]

    def resolve_layer(self, layer: str) -> str:
        """The module path a layer name means; an unknown name fails with close suggestions."""
        if layer in self.aliases:
            return self.aliases[layer]
        names = self.layer_names()
        if layer in names:
            return layer
        close = difflib.get_close_matches(layer, [*self.aliases, *names], n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise FvError(
            f"unknown layer '{layer}' for model {self.name}{hint} (`fv layers --model {self.name}` lists them)"
        )

    def describe_layer(self, layer: str) -> str:
        path = self.resolve_layer(layer)
        return layer if path == layer else f"{layer} ({path})"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_state(module: nn.Module, state: Any, source: str) -> None:
    """Load a state dict strictly; a mismatch fails in one line naming what did not fit."""
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # checkpoints that wrap the weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FvError(f"{source}: not a state dict of tensors")
    own = module.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(_AUXILIARY_HEADS)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if keys:
                shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
                parts.append(f"{len(keys)} {label} ({shown})")
        raise FvError(f"{source}: weights do not fit the model: {'; '.join(parts)}")
    module.load_state_dict(state, strict=True)


def random_init(module: nn.Module, seed: int, normalization: Normalization | None) -> None:
    """A variance-preserving random init, so that random-weight models have live units.

    Convolutions get He (Kaiming) normal weights made zero-mean per filter: with non-negative
    inputs, a filter whose weights sum below zero would otherwise silence its channel. BatchNorm
    statistics are then calibrated on random images, so every channel starts near zero mean and
    unit variance before its ReLU. (torchvision's own GoogLeNet init shrinks activations about
    tenfold per block and leaves many channels dead.)
    """
    generator = torch.Generator().manual_seed(seed)
    norms: list[nn.modules.batchnorm._BatchNorm] = []
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.conv._ConvNd):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=generator)
                m.weight -= m.weight.mean(dim=tuple(range(1, m.weight.dim())), keepdim=True)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear", generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
                if getattr(m, "weight", None) is not None:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.reset_running_stats()
                    norms.append(m)
    if norms:
        _calibrate(module, norms, generator, normalization)


def _calibrate(module: nn.Module, norms: list, generator: torch.Generator, normalization) -> None:
    images = torch.rand(CALIBRATION_IMAGES, 3, CALIBRATION_SIZE, CALIBRATION_SIZE, generator=generator)
    if normalization is not None:
        mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in normalization)
        images = (images - mean) / std
    momenta = [m.momentum for m in norms]
    was_training = module.training
    try:
        for m in norms:
            m.momentum = None  # cumulative average: one pass sets the statistics exactly
        module.train()
        with torch.no_grad():
            module(images)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        module.train(was_training)


def _download(published: Published, model: str, quiet: bool) -> dict[str, torch.Tensor]:
    """Published weights through torch.hub's cache (downloaded once), or one clear line."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    cached = (folder / published.filename).exists()
    chatter = io.StringIO()
    previous_timeout = socket.getdefaulttimeout()
    try:
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        # torch.hub announces downloads on stdout: keep stdout for results and errors to one line.
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            state = torch.hub.load_state_dict_from_url(
                published.url, map_location="cpu", progress=False, check_hash=published.check_hash, weights_only=True
            )
    except Exception as error:  # network, file system and hash failures all end the same way
        reason = str(getattr(error, "reason", None) or error).splitlines()[0][:200]
        if cached:
            raise FvError(
                f"cached weights {folder / published.filename} cannot be read ({reason}); delete it to download "
                f"again, or use --weights random"
            ) from None
        raise FvError(
            f"cannot download {model} weights {published.identity} ({reason}): put {published.filename} in "
            f"{folder}/ or use --weights random"
        ) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
    if not cached and not quiet:
        print(f"fv: downloaded {published.identity} to {folder / published.filename}", file=sys.stderr)
    return state


def _import_factory(spec: str) -> Callable[[], Any]:
    source, _, func = spec.rpartition(":")
    try:
        if source.endswith(".py"):
            path = Path(source)
            if not path.is_file():
                raise FvError(f"--model {spec}: file {source} not found")
            module_spec = importlib.util.spec_from_file_location(f"fv_factory_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(source)
    except FvError:
        raise
    except Exception as error:
        raise FvError(f"--model {spec}: cannot import {source}: {type(error).__name__}: {error}") from None
    factory = getattr(module, func, None)
    if not callable(factory):
        raise FvError(f"--model {spec}: {source} has no function '{func}'")
    return factory


def _from_factory(spec: str) -> tuple[nn.Module, Normalization | None, int | None]:
    """Call a factory: it returns a module, or (module, preprocessing) where preprocessing has a
    `mean` and `std` (a dict, or an object such as torchvision's Normalize) and maybe a `size`."""
    factory = _import_factory(spec)
    try:
        made = factory()
    except Exception as error:
        raise FvError(f"--model {spec}: the factory failed: {type(error).__name__}: {error}") from None
    module, preprocessing = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if not isinstance(module, nn.Module):
        raise FvError(f"--model {spec}: the factory returned {type(made).__name__}, expected an nn.Module or (nn.Module, preprocessing)")
    if preprocessing is None:
        return module, None, None
    get = preprocessing.get if isinstance(preprocessing, dict) else lambda key: getattr(preprocessing, key, None)
    try:
        mean, std = tuple(float(v) for v in get("mean")), tuple(float(v) for v in get("std"))
        size = get("size")
        size = int(size if not isinstance(size, (list, tuple)) else size[-1]) if size is not None else None
    except (TypeError, ValueError):
        raise FvError(f"--model {spec}: the factory's preprocessing needs 'mean' and 'std' (3 numbers each) and maybe 'size'") from None
    if len(mean) != 3 or len(std) != 3 or not all(v > 0 for v in std):
        raise FvError(f"--model {spec}: the factory's preprocessing needs 3 means and 3 positive stds")
    return module, (mean, std), size


class Scripted(nn.Module):
    """A TorchScript model. Its modules run inside TorchScript, where Python hooks cannot see them,
    so its one layer is `output`: the model's result (`output@KEY` for tuple or dict results)."""

    def __init__(self, scripted: torch.jit.ScriptModule):
        super().__init__()
        self.scripted = scripted
        self.output = nn.Identity()

    def forward(self, x: torch.Tensor):
        return self.output(self.scripted(x))


TIMM_PREFIX = "timm:"
HUB_HOST = "huggingface.co"


def _timm_module():
    try:
        import timm
    except ImportError:
        raise FvError("timm:NAME models need timm: pip install timm (or the project's [timm] extra)") from None
    return timm


def _timm_pretrained(timm: Any, name: str, quiet: bool) -> nn.Module:
    """timm's published weights, from the Hugging Face cache or the hub; offline, one clear line."""
    import logging

    import huggingface_hub.constants as hub

    def create(offline: bool) -> nn.Module:
        previous, hub.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE, offline or hub.HF_HUB_OFFLINE
        try:
            return timm.create_model(name, pretrained=True)
        finally:
            hub.HF_HUB_OFFLINE = previous

    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # its retry warnings would break the one-line error
    try:
        try:
            return create(offline=True)  # the cache first: no network needed
        except Exception:
            try:
                socket.create_connection((HUB_HOST, 443), timeout=5).close()
            except OSError as error:
                raise RuntimeError(f"{HUB_HOST} unreachable: {error}") from None
            model = create(offline=False)
            if not quiet:
                print(f"fv: downloaded timm weights for {name} to {hub.HF_HUB_CACHE}", file=sys.stderr)
            return model
    except Exception as error:
        hub_id = timm.create_model(name, pretrained=False).pretrained_cfg.get("hf_hub_id") or name
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise FvError(
            f"cannot download timm weights {hub_id} ({reason}): put them in the Hugging Face cache "
            f"{hub.HF_HUB_CACHE}/ or use --weights random"
        ) from None
    finally:
        logger.setLevel(level)


def _from_timm(model: str, weights: str, quiet: bool) -> tuple[nn.Module, Normalization, int | None, str]:
    timm = _timm_module()
    name = model[len(TIMM_PREFIX) :]
    known = timm.list_models()
    if name not in known and name not in timm.list_models(pretrained=True):
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise FvError(f"unknown timm model '{name}'{hint} (`fv models 'timm:*'` lists them)")
    if weights == "default":
        module = _timm_pretrained(timm, name, quiet)
        identity = f"timm:{module.pretrained_cfg.get('hf_hub_id') or name}"
    else:
        module, identity = timm.create_model(name, pretrained=False), None
    config = timm.data.resolve_data_config({}, model=module)
    normalization = (tuple(float(v) for v in config["mean"]), tuple(float(v) for v in config["std"]))
    return module, normalization, int(config["input_size"][-1]), identity


def timm_models() -> list[str]:
    try:
        import timm
    except ImportError:
        return []
    return [TIMM_PREFIX + name for name in timm.list_models()]


def is_torchscript(model: str) -> bool:
    return ":" not in model and model.lower().endswith((".pt", ".ts", ".pth", ".torchscript"))


def _torchscript(path: str) -> Scripted:
    if not Path(path).is_file():
        raise FvError(f"--model {path}: file not found (expected a model name, a TorchScript file or FILE.py:FUNC)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            scripted = torch.jit.load(path, map_location="cpu")
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise FvError(f"--model {path}: not a TorchScript file ({first}); state dicts go to --weights") from None
    return Scripted(scripted)


def is_factory(model: str) -> bool:
    return ":" in model and not model.startswith(TIMM_PREFIX)


_WEIGHTS_NAME = re.compile(r"(\w+_Weights\.)?[A-Za-z][A-Za-z0-9_]*")


def _unreadable(error: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, in a few words."""
    text = str(error)
    if "central directory" in text or "zip archive" in text:
        return "it is truncated or damaged"
    if "Weights only load failed" in text:
        return "it is not a PyTorch checkpoint, or it holds pickled Python objects, which fv does not load"
    return (text.strip().splitlines() or [type(error).__name__])[0][:200]


def load_model(model: str, weights: str, seed: int, quiet: bool = False) -> LoadedModel:
    """Build `model` with `weights` (default, a weights name, random, or a state-dict path); CPU, eval, frozen."""
    timm_model = model.startswith(TIMM_PREFIX)
    entry = None if is_factory(model) or is_torchscript(model) else find_entry(model)
    native_size, sha256, categories = None, None, None
    if timm_model:
        module, normalization, native_size, identity = _from_timm(model, weights, quiet)
        architecture, aliases = f"timm {model[len(TIMM_PREFIX):]}", {}
    elif is_torchscript(model):
        module, architecture, aliases, normalization = _torchscript(model), f"TorchScript {model}", {}, None
        identity, sha256 = f"torchscript:{model}", sha256_of(Path(model))
        if weights == "random":
            raise FvError("--weights random: a TorchScript model's modules are opaque to fv; use --weights default or a state-dict file")
    elif is_factory(model):
        module, normalization, native_size = _from_factory(model)
        architecture, aliases, identity = f"factory {model}", {}, "factory default"
    elif entry is not None:
        architecture, aliases = entry.architecture, entry.aliases
        default = entry.published("DEFAULT")  # metadata only: the preprocessing the network expects
        normalization, native_size, categories = default.normalization, default.native_size, default.categories
        module = identity = None
    else:
        close = difflib.get_close_matches(model, known_models(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise FvError(f"unknown model '{model}'{hint} (`fv models` lists them, or use a factory FILE.py:FUNC)")

    if timm_model and weights == "default":
        pass  # loaded above
    elif weights == "random":
        if module is None:
            module = entry.build()
        random_init(module, seed, normalization)
        identity = f"random(seed={seed})"
    elif Path(weights).is_file():
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as error:
            raise FvError(f"--weights {weights}: cannot read a state dict from this file ({_unreadable(error)})") from None
        if module is None:
            module = entry.build()
        load_state(module, state, f"--weights {weights}")
        identity, sha256 = f"file:{weights}", sha256_of(Path(weights))
    elif entry is not None and _WEIGHTS_NAME.fullmatch(weights):
        published = entry.published("DEFAULT" if weights == "default" else weights)
        module = entry.build()
        load_state(module, _download(published, model, quiet), published.identity)
        identity, normalization, native_size = published.identity, published.normalization, published.native_size
        categories = published.categories or categories
        sha256 = sha256_of(Path(torch.hub.get_dir()) / "checkpoints" / published.filename)
    elif weights != "default":
        raise FvError(f"--weights {weights}: file not found (expected default, random, a weights name or a state-dict file)")

    module.eval()
    module.requires_grad_(False)
    return LoadedModel(
        name=model,
        module=module,
        architecture=architecture,
        weights=identity,
        weights_sha256=sha256,
        normalization=normalization,
        native_size=native_size,
        aliases=dict(aliases),
        categories=categories or imagenet_categories(),
    )


def imagenet_categories() -> tuple[str, ...]:
    """ImageNet-1k's class names (from torchvision's metadata; no download). fv offers them for
    any model with 1000 outputs that brings no names of its own."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
