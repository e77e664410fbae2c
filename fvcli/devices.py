"""Choosing the device a run uses, with one-line errors when the asked-for one is not there."""

from __future__ import annotations

import platform

import torch

from fvcli.errors import FvError


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA when torch sees a GPU and the CPU otherwise; others must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FvError(f"--device {name}: torch sees no CUDA GPU on this machine; use --device cpu or auto")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise FvError(
                f"--device {name}: there are {torch.cuda.device_count()} CUDA devices (cuda:0 to "
                f"cuda:{torch.cuda.device_count() - 1})"
            )
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise FvError(f"--device {name}: MPS is not available on this machine; use --device cpu or auto")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    return str(device)
