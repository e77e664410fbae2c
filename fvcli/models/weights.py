"""Weights: published ones through torch.hub's cache, state-dict files, and a random init that
leaves units alive. Every failure is one line naming the file, the folder and what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import socket
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch
from torch import nn

from fvcli.errors import FvError
from fvcli.models.layer_keys import input_channels

if TYPE_CHECKING:
    from fvcli.models.normalization import Normalization

DOWNLOAD_TIMEOUT_S = 60
CALIBRATION_IMAGES = 8  # random images that set BatchNorm statistics for --weights random
CALIBRATION_SIZE = 128
_AUXILIARY_HEADS = ("aux1.", "aux2.", "AuxLogits.")  # in published state dicts, not in the models fv builds


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
    for key, value in state.items():
        try:
            checked_tensor(value, 1 << 34, key, real=False)
        except ValueError as error:
            raise FvError(f"{source}: {error}") from None
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
    images = torch.rand(CALIBRATION_IMAGES, input_channels(module), CALIBRATION_SIZE, CALIBRATION_SIZE, generator=generator)
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


def download(published: Published, model: str, quiet: bool) -> dict[str, torch.Tensor]:
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


def read_state(path: Path) -> Any:
    """A state-dict file, loaded with weights_only=True (no pickled code runs)."""
    try:
        return safe_load(path)
    except ValueError as error:
        raise FvError(f"--weights {path}: cannot read a state dict from this file ({error})") from None


def safe_load(path: Path) -> Any:
    """torch.load with weights_only=True, quietly: ValueError says in a few words why a file is refused.

    torch's own message advises weights_only=False, which would run any code in the file; fv never
    does that, so the advice is not passed on, and neither are its warnings (such as the one about
    pickle protocols), which would come before fv's one line.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(_unreadable(error)) from None


REAL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def checked_tensor(value: Any, max_values: int, what: str = "a tensor", real: bool = True) -> torch.Tensor:
    """`value`, a tensor read from a file, when it is one fv can use as it is; ValueError saying what
    it is otherwise. A file can hold any tensor torch can describe: an expanded one (stride 0: a
    few bytes on disk, gigabytes once made whole), a meta one (a shape without values), a sparse,
    nested or quantized one, a complex one, or one on a device (map_location makes it the CPU's).
    Every such tensor is refused here, before anything is computed from it. `real=False` lets
    other dtypes through (a model's state dict may hold bool masks)."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{what} is a {type(value).__name__}, not a tensor")
    if value.layout != torch.strided or value.is_nested or value.is_quantized:
        raise ValueError(f"{what} is a {str(value.layout).removeprefix('torch.')}{' nested' if value.is_nested else ''}{' quantized' if value.is_quantized else ''} tensor; fv reads dense ones")
    if value.device.type != "cpu":
        raise ValueError(f"{what} is on the {value.device.type} device, without values fv can read")
    if real and value.dtype not in REAL_DTYPES:
        raise ValueError(f"{what} holds {str(value.dtype).removeprefix('torch.')}; expected real numbers")
    if value.numel() > max_values:
        raise ValueError(f"{what} holds {value.numel():,} values; at most {max_values:,}")
    # Its storage must hold as many values as its shape: an expanded (stride-0) or overlapping view
    # of a few bytes on disk would be made whole by what comes next.
    if value.untyped_storage().nbytes() < value.numel() * value.element_size():
        raise ValueError(f"{what} is a view with strides {tuple(value.stride())} over fewer values than its shape {tuple(value.shape)}; save it whole (.contiguous())")
    return value


def _unreadable(error: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, in a few words."""
    text = str(error)
    if "central directory" in text or "zip archive" in text:
        return "it is truncated or damaged"
    if "Weights only load failed" in text or isinstance(error, pickle.UnpicklingError):
        return "it is not a PyTorch checkpoint, or it holds pickled Python objects, which fv does not load"
    return (text.strip().splitlines() or [type(error).__name__])[0][:200]
