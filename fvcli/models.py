"""Models: a registry of known networks, factories, the three weight sources, and layer names.

A loaded model is in eval mode with no parameter gradients, and carries its input normalization
and the identity of its weights (for the sidecar). Layers are named by `named_modules()` paths;
a model may add aliases (GoogLeNet accepts the article's `mixed4a` for torchvision's `inception4a`).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import importlib.util
import io
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch
from torch import nn

from fvcli.errors import FvError

Normalization = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per input channel
IMAGENET: Normalization = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DOWNLOAD_TIMEOUT_S = 60
CALIBRATION_IMAGES = 8  # random images that set BatchNorm statistics for --weights random
CALIBRATION_SIZE = 128


@dataclass(frozen=True)
class ModelEntry:
    """A named model: how to build its architecture and where its published weights are."""

    name: str
    architecture: str  # what the network is, for the sidecar and `fv --help`
    build: Callable[[dict[str, torch.Tensor] | None, str], nn.Module]  # (state dict or None, its source)
    published_weights: Callable[[], Any]  # -> a torchvision WeightsEnum member
    aliases: dict[str, str] = field(default_factory=dict)


def _googlenet(state: dict[str, torch.Tensor] | None, source: str = "") -> nn.Module:
    from torchvision.models import googlenet

    # transform_input=True: the published weights expect it; keep the architecture the same for
    # random weights so that a spec means the same network whatever its weights.
    aux = state is not None and any(k.startswith("aux1.") for k in state)
    model = googlenet(weights=None, aux_logits=aux, init_weights=False, transform_input=True)
    if state is not None:
        load_state(model, state, source)
    model.aux_logits, model.aux1, model.aux2 = False, None, None  # unused in eval; drop them
    return model


def _googlenet_weights() -> Any:
    from torchvision.models import GoogLeNet_Weights

    return GoogLeNet_Weights.DEFAULT


_GOOGLENET_ALIASES = {
    "conv2d0": "conv1",
    "conv2d1": "conv2",
    "conv2d2": "conv3",
    **{f"mixed{b}": f"inception{b}" for b in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")},
}

REGISTRY: dict[str, ModelEntry] = {
    "googlenet": ModelEntry(
        name="googlenet",
        architecture="torchvision GoogLeNet (batch norm, transform_input=True, 1000 classes)",
        build=_googlenet,
        published_weights=_googlenet_weights,
        aliases=_GOOGLENET_ALIASES,
    ),
}


@dataclass
class LoadedModel:
    """A model ready to render: eval mode, frozen parameters, known normalization and weights."""

    name: str
    module: nn.Module
    architecture: str
    weights: str  # "random(seed=0)", a torchvision weights name, or "file:<path>"
    weights_sha256: str | None = None
    normalization: Normalization | None = None  # None: the model takes [0, 1] RGB as it is
    aliases: dict[str, str] = field(default_factory=dict)

    def layer_names(self) -> list[str]:
        return [name for name, _ in self.module.named_modules() if name]

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


def weights_normalization(weights: Any) -> Normalization:
    """The (mean, std) a torchvision weights enum's own preprocessing uses; the same for any weights
    of that architecture, since the network was trained to expect it."""
    preprocess = weights.transforms()
    return tuple(float(v) for v in preprocess.mean), tuple(float(v) for v in preprocess.std)


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


def _published(entry: ModelEntry, quiet: bool) -> tuple[nn.Module, str]:
    """The model's published weights via torchvision's weights API and cache, or one clear line."""
    enum = entry.published_weights()
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    filename = Path(urlparse(enum.url).path).name
    cached = (folder / filename).exists()
    chatter = io.StringIO()
    previous_timeout = socket.getdefaulttimeout()
    try:
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        # torch.hub announces downloads on stdout: keep stdout for results and errors to one line.
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            state = enum.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # network, file system and hash failures all end the same way
        reason = str(getattr(error, "reason", None) or error).splitlines()[0][:200]
        if cached:
            raise FvError(
                f"cached weights {folder / filename} cannot be read ({reason}); delete it to download again, "
                f"or use --weights random"
            ) from None
        raise FvError(
            f"cannot download {entry.name} weights {enum} ({reason}): put {filename} in {folder}/ "
            f"or use --weights random"
        ) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
    if not cached and not quiet:
        print(f"fv: downloaded {enum} to {folder / filename}", file=sys.stderr)
    return entry.build(state, str(enum)), str(enum)


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


def _from_factory(spec: str) -> nn.Module:
    factory = _import_factory(spec)
    try:
        module = factory()
    except Exception as error:
        raise FvError(f"--model {spec}: the factory failed: {type(error).__name__}: {error}") from None
    if not isinstance(module, nn.Module):
        raise FvError(f"--model {spec}: the factory returned {type(module).__name__}, expected a torch nn.Module")
    return module


def is_factory(model: str) -> bool:
    return ":" in model


def load_model(model: str, weights: str, seed: int, quiet: bool = False) -> LoadedModel:
    """Build `model` with `weights` (default, random, or a state-dict path); CPU, eval, frozen."""
    if is_factory(model):
        module = _from_factory(model)
        architecture, aliases, normalization = f"factory {model}", {}, None
        identity = "factory default"
    elif model in REGISTRY:
        entry = REGISTRY[model]
        architecture, aliases = entry.architecture, entry.aliases
        normalization = weights_normalization(entry.published_weights())
        module, identity = (None, None)
    else:
        close = difflib.get_close_matches(model, list(REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise FvError(
            f"unknown model '{model}'{hint} (known: {', '.join(sorted(REGISTRY))}, or a factory FILE.py:FUNC)"
        )

    sha256 = None
    if weights == "random":
        if module is None:
            module = entry.build(None, "")
        random_init(module, seed, normalization)
        identity = f"random(seed={seed})"
    elif weights == "default":
        if module is None:
            module, identity = _published(entry, quiet)
    else:
        path = Path(weights)
        if not path.is_file():
            raise FvError(f"--weights {weights}: file not found (expected default, random or a state-dict file)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise FvError(f"--weights {weights}: cannot read a state dict from this file ({first})") from None
        if module is None:
            module = entry.build(state, f"--weights {weights}")
        else:
            load_state(module, state, f"--weights {weights}")
        identity, sha256 = f"file:{path}", sha256_of(path)

    module.eval()
    module.requires_grad_(False)
    return LoadedModel(
        name=model,
        module=module,
        architecture=architecture,
        weights=identity,
        weights_sha256=sha256,
        normalization=normalization,
        aliases=dict(aliases),
    )
