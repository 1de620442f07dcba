"""Where torch runs: the one place that turns a device name (the ``EHR_DEVICE`` setting: auto, cpu or cuda) into a
torch device, for every stage that runs a model (NER and risk)."""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")

D001 = "D001: device {device!r} is not one of auto, cpu, cuda. Set EHR_DEVICE (or pass device=) to one of them."
D002 = (
    "D002: device 'cuda' was requested but torch sees no CUDA device. Set EHR_DEVICE=auto or cpu, or run the task "
    "on a GPU worker (the gpu queue)."
)


class DeviceError(ValueError):
    """The requested device is unknown or not present on this machine; the message says what to set."""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → cuda when torch sees a GPU, else cpu; ``cuda`` without a GPU is an error, not a silent CPU run."""
    if device not in DEVICES:
        raise DeviceError(D001.format(device=device))
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError(D002)
    return torch.device(device)
