"""Where code runs: pick the device, describe the hardware for a model card, read the load average."""
from __future__ import annotations

import os
import platform

import torch

DEVICE_NAMES = "auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps"


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def check_device_name(name: str) -> str:
    """`name` if it has one of the forms in DEVICE_NAMES (whether that device is here is not checked)."""
    if not isinstance(name, str):
        raise TypeError(f"device={name!r} is not allowed: must be a string, one of {DEVICE_NAMES}")
    index = name[len("cuda:"):] if name.startswith("cuda:") else None
    if name not in ("auto", "cpu", "cuda", "mps") and not (index is not None and index.isascii() and index.isdigit()):
        raise ValueError(f"device={name!r} is not allowed: must be {DEVICE_NAMES}")
    return name


def pick_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu (or the one named, after checking that this machine has it).

    Raises ValueError naming the device when it is malformed or not here (no CUDA, or fewer GPUs)."""
    check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device={name!r} is not available: {why}; use auto or cpu")
        index = int(name[len("cuda:"):]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device={name!r} is not available: this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if name == "mps" and not _mps_available():
        raise ValueError("device='mps' is not available: no Apple GPU (MPS) here; use auto or cpu")
    return torch.device(name)


def hardware_description(device: torch.device) -> str:
    """A one-line description of where training ran (for the model card)."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    kind = "Apple GPU (MPS), " if device.type == "mps" else ""
    return f"{kind}{cpu}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads"


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none): benchmarks store it, because other
    jobs on the machine skew timings."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None
