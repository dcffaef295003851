"""GPU utilisation, memory, temperature and power through pynvml; a machine without a GPU says why, never zeros."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class GpuSample:
    """One reading of one GPU."""

    index: int
    name: str
    utilisation_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_c: float | None
    power_w: float | None

    @property
    def memory_headroom(self) -> float:
        """Share of GPU memory still free (0..1)."""
        return 1.0 - self.memory_used_bytes / self.memory_total_bytes if self.memory_total_bytes else 0.0


def _nvml() -> Any:
    import pynvml

    return pynvml


@lru_cache(maxsize=1)
def gpu_status() -> tuple[bool, str]:
    """(available, reason): whether NVML answers and how many GPUs it sees, or why not."""
    try:
        nvml = _nvml()
    except ImportError:
        return False, "unavailable (pynvml not installed: pip install nvidia-ml-py)"
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: all mean "no usable GPU here"
        return False, f"unavailable (NVML could not start: {exc})"
    count = int(nvml.nvmlDeviceGetCount())
    if count == 0:
        return False, "unavailable (NVML found no GPU)"
    return True, f"available ({count} GPU)"


def sample_gpus() -> list[GpuSample]:
    """One reading of every GPU; empty when none is available (check `gpu_status()` for why)."""
    available, _ = gpu_status()
    if not available:
        return []
    nvml = _nvml()
    samples = []
    for index in range(int(nvml.nvmlDeviceGetCount())):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        name = nvml.nvmlDeviceGetName(handle)
        util = nvml.nvmlDeviceGetUtilizationRates(handle)
        mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        try:
            temperature: float | None = float(
                nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
            )
        except Exception:  # some boards (MIG slices, vGPUs) do not expose it
            temperature = None
        try:
            power: float | None = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        except Exception:
            power = None
        samples.append(
            GpuSample(
                index=index,
                name=name.decode() if isinstance(name, bytes) else str(name),
                utilisation_percent=float(util.gpu),
                memory_used_bytes=int(mem.used),
                memory_total_bytes=int(mem.total),
                temperature_c=temperature,
                power_w=power,
            )
        )
    return samples
