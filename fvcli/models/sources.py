"""Model sources beyond the registry: factories (FILE.py:FUNC, package.module:FUNC), timm models
(timm:NAME) and TorchScript files. Each returns a module and what is known of its preprocessing.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import hashlib
import importlib
import importlib.util
import socket
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from fvcli.errors import FvError, raised
from fvcli.specs.limits import MAX_MEAN, STD_RANGE, show
from fvcli.specs.limits import MAX_SIZE

if TYPE_CHECKING:
    from fvcli.models.normalization import Normalization


def _import_factory(spec: str) -> Callable[[], Any]:
    source, _, func = spec.rpartition(":")
    try:
        if source.endswith(".py"):
            path = Path(source)
            if not path.is_file():
                raise FvError(f"--model {spec}: file {source} not found")
            module_spec = importlib.util.spec_from_file_location(f"fv_factory_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            with contextlib.redirect_stdout(sys.stderr):  # user code's prints must not mix with fv's output (--json)
                module_spec.loader.exec_module(module)
        else:
            with contextlib.redirect_stdout(sys.stderr):
                module = importlib.import_module(source)
    except FvError:
        raise
    except (Exception, SystemExit) as error:  # user code: one line, whatever it does
        raise FvError(f"model {spec}: importing {source} {raised(error)}") from None
    factory = getattr(module, func, None)
    if not callable(factory):
        raise FvError(f"--model {spec}: {source} has no function '{func}'")
    return factory


def from_factory(spec: str) -> tuple[nn.Module, Normalization | None, int | None]:
    """Call a factory: it returns a module, or (module, preprocessing) where preprocessing has a
    `mean` and `std` (a dict, or an object such as torchvision's Normalize) and maybe a `size`."""
    factory = _import_factory(spec)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # "Loaded pretrained weights" and the like: not on stdout
            made = factory()
    except (Exception, SystemExit) as error:
        raise FvError(f"model {spec}: the factory {raised(error)}") from None
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
    # As --normalize's: a NaN would render, then fail the sidecar (JSON has no NaN) with the PNGs written.
    if not all(abs(v) <= MAX_MEAN for v in mean) or not all(STD_RANGE[0] <= v <= STD_RANGE[1] for v in std):
        raise FvError(
            f"--model {spec}: the factory's preprocessing has mean {list(mean)} and std {list(std)}; expected means from "
            f"-{show(MAX_MEAN)} to {show(MAX_MEAN)} and stds from {show(STD_RANGE[0])} to {show(STD_RANGE[1])}"
        )
    if size is not None and not 1 <= size <= MAX_SIZE:
        raise FvError(f"--model {spec}: the factory's preprocessing has size {size}; expected a side from 1 to {MAX_SIZE}")
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


def from_timm(model: str, weights: str, quiet: bool) -> tuple[nn.Module, Normalization, int | None, str]:
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


def torchscript(path: str) -> Scripted:
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


def from_module(module: nn.Module, name: str) -> nn.Module:
    """A model object given in memory (the Python API), as fv renders it: a deep copy, in float32,
    so that nothing fv does to it (eval mode, frozen parameters, the device and channels_last
    layout, folded BatchNorms) reaches the caller's module."""
    if not isinstance(module, nn.Module):
        raise FvError(f"model {name}: expected an nn.Module or a model name, got {type(module).__name__}")
    try:
        copied = copy.deepcopy(module)
    except Exception as error:
        raise FvError(f"model {name}: cannot be copied, which fv needs to leave it as it is (deepcopy {raised(error)})") from None
    return copied.float()


def module_sha256(module: nn.Module) -> str:
    """A hash of a module's parameters and buffers: names, dtypes, shapes and values."""
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def is_factory(model: str) -> bool:
    return ":" in model and not model.startswith(TIMM_PREFIX)
