"""Models: a registry of known networks, loading one from any source with any weights, and layer names.

A loaded model is in eval mode with no parameter gradients, and carries its input normalization
and the identity of its weights (for the sidecar). Layers are named by `named_modules()` paths;
a model may add aliases (GoogLeNet accepts the article's `mixed4a` for torchvision's `inception4a`),
`output` is the model's own output (`output@logits` for an element of a tuple or dict it returns),
and any name takes `_pre_relu` for its pre-ReLU twin (`mixed4a_pre_relu`, see fvcli.models.prerelu).
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from fvcli.errors import FvError
from fvcli.models.calls import module_call
from fvcli.models.layer_keys import OUTPUT_NAME, hookable_modules
from fvcli.models.normalization import Normalization
from fvcli.models.prerelu import SUFFIX
from fvcli.models.sources import TIMM_PREFIX, from_factory, from_module, from_timm, is_factory, is_torchscript, module_sha256, torchscript
from fvcli.models.weights import Published, download, load_state, random_init, read_state, sha256_of


@dataclass(frozen=True)
class ModelEntry:
    """A named model: how to build its architecture and which weights are published for it."""

    name: str
    architecture: str  # what the network is, for the sidecar
    build: Callable[[], nn.Module]  # the architecture; its init does not matter
    published: Callable[[str], Published]  # a weights name (DEFAULT, IMAGENET1K_V2, ...) -> Published
    aliases: dict[str, str] | Callable[[nn.Module], dict[str, str]] = field(default_factory=dict)
    # Weights that install with a package (no download): their file, or FvError saying what to install.
    local_weights: Callable[[], Path] | None = None
    adapt_state: Callable[[dict], dict] = lambda state: state  # a published state dict's keys -> the module's


# Build options that keep a torchvision architecture the same whatever its weights: the published
# GoogLeNet and Inception v3 weights expect transform_input=True; auxiliary heads never run in eval.
_BUILD_OPTIONS = {
    "googlenet": {"aux_logits": False, "transform_input": True, "init_weights": False},
    "inception_v3": {"aux_logits": False, "transform_input": True, "init_weights": False},
}
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
    from fvcli.models import inceptionv1

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


def _efficientnet_lite_entry(name: str) -> ModelEntry:
    from fvcli.models import efficientnet_lite as lite

    variant = lite.VARIANTS[name]

    def pick(weights: str) -> Published:
        if weights.upper() != "DEFAULT":
            raise FvError(f"--weights {weights}: {name} has one set of published weights, default ({variant.package})")
        return Published(
            f"{variant.package} {lite.PACKAGE_VERSION}", "", lite.NORMALIZATION, native_size=variant.size,
            categories=imagenet_categories(),
        )

    return ModelEntry(
        name=name,
        architecture=f"EfficientNet-Lite{name[-1]} (ReLU6, no squeeze-excitation, TensorFlow 'same' padding; ImageNet-1k, trained at {variant.size} px)",
        build=lambda: lite.build(name),
        published=pick,
        aliases=lite.aliases,
        local_weights=lambda: lite.weights_file(name),
        adapt_state=lite.from_published_keys,
    )


# Networks fv defines itself, next to torchvision's.
OWN_MODELS: dict[str, Callable[[], ModelEntry]] = {
    "inceptionv1": _inceptionv1_entry,
    **{name: functools.partial(_efficientnet_lite_entry, name) for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")},
}


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
        """The module path a layer name means (a twin's key for `NAME_pre_relu`, whether or not the
        layer has one: capturing it says); an unknown name fails with close suggestions."""
        if layer in self.aliases:
            return self.aliases[layer]
        names = self.layer_names()
        if layer in names:
            return layer
        if layer == OUTPUT_NAME:
            return ""  # the model's own output: the root module's path (a module named output wins, above)
        if module_call(names, layer)[1] > 1:
            return layer  # a later call of a module called more than once
        base = layer.removesuffix(SUFFIX)
        if base != layer and (base in self.aliases or base in names or module_call(names, base)[1] > 1):
            return self.resolve_layer(base) + SUFFIX
        known = [*self.aliases, *names]
        if "relu" in layer.lower():  # someone after a twin: suggest twins' names too
            known += [name + SUFFIX for name in known]
        known.append(OUTPUT_NAME)
        close = difflib.get_close_matches(layer, known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise FvError(
            f"unknown layer '{layer}' for model {self.name}{hint} (`fv layers --model {self.name}` lists them)"
        )

    def describe_layer(self, layer: str) -> str:
        path = self.resolve_layer(layer)
        return layer if path == layer else f"{layer} ({path})"


_WEIGHTS_NAME = re.compile(r"(\w+_Weights\.)?[A-Za-z][A-Za-z0-9_]*")


def model_key(settings) -> tuple:
    """What identifies a loaded model among a run's settings: random weights derive from the seed,
    other weights do not."""
    return (settings.model, settings.weights, settings.seed if settings.weights == "random" else None)


def _check_materialized(module: nn.Module, model: str) -> None:
    """Lazy layers (nn.LazyLinear ...) have no weights until a first forward pass: fv cannot
    initialize, load, copy or freeze them, nor guess the input size that would shape them; nor
    can it use a model on the meta device."""
    from torch.nn.parameter import is_lazy

    lazy = [name for name, m in module.named_modules() if any(is_lazy(p) for p in m.parameters(recurse=False))]
    if lazy:
        raise FvError(
            f"model {model}: its layer {lazy[0] or type(module).__name__} ({type(dict(module.named_modules())[lazy[0]]).__name__}) "
            "has uninitialized lazy parameters; run one forward pass on an input of the size it is for before rendering"
        )
    # Parameters on the meta device have shapes and no values: nothing can be computed, copied or loaded into them
    meta = next((name for name, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta), None)
    if meta is not None:
        raise FvError(
            f"model {model}: its {meta} is on the meta device (a shape without values); give it weights "
            "(module.to_empty(device='cpu'), then load a state dict) before rendering"
        )


def load_model(model: str, weights: str, seed: int, quiet: bool = False, module: nn.Module | None = None) -> LoadedModel:
    """Build `model` with `weights` (default, a weights name, random, or a state-dict path); eval, frozen.

    `module`: a model object given in memory (the Python API), named `model`; fv renders a copy of
    it (sources.from_module), with its own weights under `default`, as for a factory.
    """
    timm_model = module is None and model.startswith(TIMM_PREFIX)
    entry = None if module is not None or is_factory(model) or is_torchscript(model) else find_entry(model)
    native_size, sha256, categories = None, None, None
    if module is not None:
        _check_materialized(module, model)
        module, normalization = from_module(module, model), None
        architecture, aliases, identity = f"in-memory {type(module).__name__}", {}, "in-memory"
        sha256 = module_sha256(module)
    elif timm_model:
        module, normalization, native_size, identity = from_timm(model, weights, quiet)
        architecture, aliases = f"timm {model[len(TIMM_PREFIX):]}", {}
    elif is_torchscript(model):
        module, architecture, aliases, normalization = torchscript(model), f"TorchScript {model}", {}, None
        identity, sha256 = f"torchscript:{model}", sha256_of(Path(model))
        if weights == "random":
            raise FvError("--weights random: a TorchScript model's modules are opaque to fv; use --weights default or a state-dict file")
    elif is_factory(model):
        module, normalization, native_size = from_factory(model)
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

    if module is not None:
        _check_materialized(module, model)
        in_default_float(module)  # before random weights are calibrated on float32 images, or a state is loaded
    if timm_model and weights == "default":
        pass  # loaded above
    elif weights == "random":
        if module is None:
            module = entry.build()
        random_init(module, seed, normalization)
        identity = f"random(seed={seed})"
    elif Path(weights).is_file():
        state = read_state(Path(weights))
        if module is None:
            module = entry.build()
        if entry is not None and isinstance(state, dict):
            state = entry.adapt_state(state)
        load_state(module, state, f"--weights {weights}")
        identity, sha256 = f"file:{weights}", sha256_of(Path(weights))
    elif entry is not None and _WEIGHTS_NAME.fullmatch(weights):
        published = entry.published("DEFAULT" if weights == "default" else weights)
        module = entry.build()
        if entry.local_weights is not None:
            path = entry.local_weights()
            load_state(module, entry.adapt_state(read_state(path)), published.identity)
        else:
            path = Path(torch.hub.get_dir()) / "checkpoints" / published.filename
            load_state(module, download(published, model, quiet), published.identity)
        identity, normalization, native_size = published.identity, published.normalization, published.native_size
        categories = published.categories or categories
        sha256 = sha256_of(path)
    elif weights != "default":
        found = "not a regular file" if os.path.exists(weights) else "file not found"  # a FIFO, a folder
        raise FvError(f"--weights {weights}: {found} (expected default, random, a weights name or a state-dict file)")

    prepare(module)
    if callable(aliases):
        aliases = aliases(module)
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


def prepare(module: torch.nn.Module) -> None:
    """A model as fv renders with it, in place: evaluation mode, no weight gradients, weights in
    float32 (see in_default_float), and no in-place activations: a ReLU(inplace=True) after a layer
    overwrites the layer's captured output as soon as a deeper layer is computed in the same pass
    (VGG's features.0/features.1), so its values would depend on what else is rendered beside it."""
    module.eval()
    module.requires_grad_(False)
    in_default_float(module)
    for layer in module.modules():
        if getattr(layer, "inplace", False) is True:
            layer.inplace = False


def in_default_float(module: torch.nn.Module) -> None:
    """Half, bfloat16 or float64 weights (all of a model's, or some layers') in the float type fv
    makes its images in, in place: float32 (torch's default dtype, which tests of exact arithmetic
    set to float64); bf16 autocast is fv's choice, by --dtype."""
    dtype = torch.get_default_dtype()
    if any(t.is_floating_point() and t.dtype != dtype for t in (*module.parameters(), *module.buffers())):
        module.to(dtype)


def imagenet_categories() -> tuple[str, ...]:
    """ImageNet-1k's class names (from torchvision's metadata; no download). fv offers them for
    any model with 1000 outputs that brings no names of its own."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
