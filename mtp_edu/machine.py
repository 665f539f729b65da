"""Where code runs: pick the device, describe the hardware for a model card, read the load average."""
from __future__ import annotations

import os
import platform

import torch


def pick_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu (or the one named)."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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
