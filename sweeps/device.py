"""The device trials train on, checked where they train: a CUDA device this machine's torch
cannot use is one error line when a worker starts (exit 2), not a failed trial per trial."""

from __future__ import annotations

import re

from sweeps.errors import UsageError

# What the config's `device` and `--device` accept.
DEVICE_PATTERN = re.compile(r"cpu|auto|cuda(:\d+)?")
ALLOWED = "cpu, cuda, cuda:N or auto"


def resolve_device(configured: str, option: str | None = None) -> str:
    """The config's device, or ``--device`` when given, as a torch device name for this
    machine (``auto``: CUDA if there is one).

    Raises:
        UsageError: it names a device this machine's torch cannot use.
    """
    setting, source = (option, "--device") if option else (configured, "device")
    if not DEVICE_PATTERN.fullmatch(setting):
        raise UsageError(f"{source}: must be {ALLOWED}, got {setting!r}")
    if setting == "cpu":
        return "cpu"  # without importing torch
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    why = None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not count:
        built = torch.version.cuda or getattr(torch.version, "hip", None)  # ROCm runs as cuda
        why = (
            "no CUDA device is visible"
            if built
            else f"this torch ({torch.__version__}) is built without CUDA"
        ) + "; use cpu or auto"
    elif int(setting.partition(":")[2] or 0) >= count:
        why = f"this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
    if why:
        raise UsageError(f"{source}: {setting!r} cannot be used here: {why}")
    return setting
