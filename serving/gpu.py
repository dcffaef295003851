"""GPU readings through NVML (pynvml, from nvidia-ml-py): utilisation, memory, temperature, power and throttle reasons,
for every GPU or only the ones this process was given. A machine without a GPU says why, never zeros.

Real boards do not answer every query: a MIG slice has no utilisation counter and some boards no power or temperature
sensor (NVML answers NotSupported). Each reading is taken on its own and a query the board cannot answer is None,
so one missing sensor never hides the others. On a Ray Serve GPU replica, Ray sets CUDA_VISIBLE_DEVICES to the
replica's own GPU(s); `visible_gpu_indices()` maps those (indices or UUIDs) to NVML indices, since NVML itself
ignores that variable and sees every GPU of the machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

T = TypeVar("T")

# NVML's clock-event (throttle) reason bits, by the names Prometheus labels carry.
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


@dataclass(frozen=True)
class GpuSample:
    """One reading of one GPU; a field is None where the board does not report it."""

    index: int
    name: str
    utilisation_percent: float | None
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_c: float | None
    power_w: float | None
    uuid: str | None = None
    throttle_reasons: tuple[str, ...] | None = None
    unsupported: tuple[str, ...] = field(
        default=()
    )  # the queries the board answered NotSupported (or failed)

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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def visible_gpu_indices(nvml: Any | None = None, env: str | None = None) -> list[int] | None:
    """NVML indices of the GPUs CUDA_VISIBLE_DEVICES gives this process (None: the variable is unset, every GPU).
    Entries may be indices or UUIDs (`GPU-…`, as Ray and Kubernetes set them); an entry naming no GPU is skipped."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES") if env is None else env
    if given is None:
        return None
    nvml = nvml or _nvml()
    count = int(nvml.nvmlDeviceGetCount())
    uuids = {_text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))): i for i in range(count)}
    indices = []
    for entry in (e.strip() for e in given.split(",")):
        if entry.isdigit() and int(entry) < count:
            indices.append(int(entry))
        elif entry in uuids:
            indices.append(uuids[entry])
        elif (match := [i for u, i in uuids.items() if entry and u.startswith(entry)]) and len(match) == 1:
            indices.append(match[0])  # CUDA accepts a unique UUID prefix too
    return indices


def throttle_reason_names(mask: int) -> tuple[str, ...]:
    """The names of the set bits of NVML's clock-event reasons mask (unknown bits by their hex value)."""
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    rest = mask & ~sum(THROTTLE_REASONS)
    return (*names, f"0x{rest:x}") if rest else tuple(names)


def read_gpu(nvml: Any, index: int) -> GpuSample:
    """One GPU's reading, each query on its own: what the board cannot answer is None and named in `unsupported`."""
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    unsupported: list[str] = []

    def query(what: str, read: Callable[[], T]) -> T | None:
        try:
            return read()
        except Exception:  # NVMLError_NotSupported on MIG slices and some boards; any other failure alike
            unsupported.append(what)
            return None

    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    util = query("utilisation", lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
    temperature = query(
        "temperature", lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
    )
    power = query("power", lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)
    reasons_of = (
        getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    )
    throttle = query("throttle_reasons", lambda: throttle_reason_names(int(reasons_of(handle))))
    uuid = query("uuid", lambda: _text(nvml.nvmlDeviceGetUUID(handle)))
    return GpuSample(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        utilisation_percent=util,
        memory_used_bytes=int(mem.used),
        memory_total_bytes=int(mem.total),
        temperature_c=temperature,
        power_w=power,
        uuid=uuid,
        throttle_reasons=throttle,
        unsupported=tuple(unsupported),
    )


def sample_gpus(indices: Sequence[int] | None = None) -> list[GpuSample]:
    """One reading of each GPU in `indices` (default: every GPU); empty when none is available (`gpu_status()`
    says why)."""
    available, _ = gpu_status()
    if not available:
        return []
    nvml = _nvml()
    wanted = range(int(nvml.nvmlDeviceGetCount())) if indices is None else indices
    return [read_gpu(nvml, i) for i in wanted]


def own_gpus() -> list[GpuSample]:
    """Readings of the GPUs this process was given (its CUDA_VISIBLE_DEVICES), or of every GPU when it is unset."""
    available, _ = gpu_status()
    if not available:
        return []
    return sample_gpus(visible_gpu_indices())
