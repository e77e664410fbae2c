"""Choosing the device a run uses, with one-line errors when the asked-for one is not there."""

from __future__ import annotations

import os
import platform

import torch

from fvcli.errors import FvError


AUTO_ENVIRONMENT = "FV_DEVICE"  # what `--device auto` means when set, e.g. FV_DEVICE=cpu


def auto_device() -> str:
    """What `auto` means: $FV_DEVICE when set (the test suite sets cpu), else CUDA when torch sees a
    GPU, else the CPU."""
    chosen = os.environ.get(AUTO_ENVIRONMENT, "").strip()
    if chosen and chosen != "auto":
        return chosen
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_device(name: str) -> torch.device:
    """`auto` is $FV_DEVICE, or CUDA when torch sees a GPU and the CPU otherwise; others must exist."""
    where, instead = f"--device {name}", "use --device cpu or auto"
    if name == "auto":
        name = auto_device()
        if os.environ.get(AUTO_ENVIRONMENT, "").strip() not in ("", "auto"):
            where, instead = f"--device auto ({AUTO_ENVIRONMENT}={name})", f"unset {AUTO_ENVIRONMENT} or set it to cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FvError(f"{where}: expected cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FvError(f"{where}: torch sees no CUDA GPU on this machine; {instead}")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise FvError(
                f"{where}: there are {torch.cuda.device_count()} CUDA devices (cuda:0 to "
                f"cuda:{torch.cuda.device_count() - 1})"
            )
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise FvError(f"{where}: MPS is not available on this machine; {instead}")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    return str(device)
