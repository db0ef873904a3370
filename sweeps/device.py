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


def worker_devices(device: str, workers: int, cuda_devices: int) -> list[str] | None:
    """Each of ``workers`` local workers' own GPU when ``device`` (resolved) is ``cuda`` on
    a machine with several: worker i on ``cuda:(i mod cuda_devices)``. None when every
    worker uses ``device`` itself (the CPU, one GPU, or a GPU named by its index)."""
    if device != "cuda" or cuda_devices < 2:
        return None
    return [f"cuda:{i % cuda_devices}" for i in range(workers)]


def cuda_device_count(device: str) -> int:
    """CUDA devices visible to torch when ``device`` is one (torch is not imported for the
    CPU)."""
    if not device.startswith("cuda"):
        return 0
    import torch

    return torch.cuda.device_count()


NOT_A_COMMAND = (
    "--gpus: for command trials (objective: {command: ...}); a task or function uses --device"
)
GPU_LIST = re.compile(r"[\w-]+(,[\w-]+)*")


def parse_gpus(option: str) -> list[str]:
    """``--gpus 0,1,2,3``: the GPUs (indices or UUIDs, as CUDA_VISIBLE_DEVICES takes them).

    Raises:
        UsageError: not a comma-separated list.
    """
    if not GPU_LIST.fullmatch(option):
        raise UsageError(
            f"--gpus: must be GPU indices separated by commas (0,1,2,3), got {option!r}"
        )
    gpus = option.split(",")
    if len(set(gpus)) < len(gpus):
        raise UsageError(f"--gpus: names a GPU twice, got {option!r}")
    return gpus


def visible_gpus(device: str) -> list[str]:
    """The GPUs a worker on ``device`` (resolved) shares out to command trials: every one
    torch sees for ``cuda``, the one named for ``cuda:N``, none for the CPU; named as the
    worker's own CUDA_VISIBLE_DEVICES names them."""
    import os

    count = cuda_device_count(device)
    if not count:
        return []
    names = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    names = names if len(names) >= count and all(names) else [str(i) for i in range(count)]
    if ":" in device:
        return [names[int(device.partition(":")[2])]]
    return names[:count]


def gpu_slots(gpus: list[str] | None, processes: int) -> list[dict[str, str]]:
    """The environment of each command trial a worker runs at once: ``processes`` of
    ``gpus`` each (``CUDA_VISIBLE_DEVICES``), so ⌊len(gpus) / processes⌋ trials; one trial,
    with the worker's environment, when there are no GPUs.

    Raises:
        UsageError: fewer GPUs than one trial takes.
    """
    if not gpus:
        return [{}]
    if len(gpus) < processes:
        raise UsageError(
            f"--gpus: a trial takes objective.processes={processes} GPUs; this worker has "
            f"{len(gpus)} ({','.join(gpus)})"
        )
    return [
        {"CUDA_VISIBLE_DEVICES": ",".join(gpus[i : i + processes])}
        for i in range(0, len(gpus) - processes + 1, processes)
    ]


def split_gpus(gpus: list[str], workers: int, processes: int) -> list[list[str]]:
    """Each of ``workers`` local workers' share of ``gpus``: whole trials' worth
    (``processes`` GPUs each), as even as can be.

    Raises:
        UsageError: fewer trials' worth of GPUs than workers.
    """
    slots = len(gpus) // processes
    if slots < workers:
        raise UsageError(
            f"--gpus: {len(gpus)} GPU(s) make {slots} trial(s) of objective.processes="
            f"{processes}, fewer than --workers {workers}; run fewer workers"
        )
    share, extra = divmod(slots, workers)
    starts = [(i * share + min(i, extra)) * processes for i in range(workers + 1)]
    return [gpus[starts[i] : starts[i + 1]] for i in range(workers)]
