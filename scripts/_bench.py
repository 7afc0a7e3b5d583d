"""Small helpers shared by the benchmark scripts: devices, interleaved timing, peak memory in subprocesses.

The machines this project is benchmarked on are shared 2-core CPUs whose speed drifts by up to 2x between
runs, so the helpers are built for comparisons made within one run:

- :func:`interleaved_times` runs several callables round-robin (rotating the starting one every round),
  so drift from other jobs hits every candidate alike; compare candidates with :func:`paired_ratio`
  (the median over rounds of the per-round ratio), not across runs.
- Peak memory is measured in a fresh process per configuration (:func:`run_worker`), because
  ``ru_maxrss`` is a per-process high-water mark that never goes down. The child gets
  ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc serves every block above 64 KiB by ``mmap`` and gives
  it back on ``free``: the resident set then follows the live tensors and its high-water mark is the
  real peak (with the default dynamic threshold freed blocks stay in the heap and the peak depends on
  the allocation history). In the child, :class:`PeakMemory` resets the kernel's high-water mark
  (``/proc/self/clear_refs``, so the peaks of imports and model building do not hide a smaller peak of
  the measured work), records the baseline right before the measured work and reports the increase
  of the peak resident set (:func:`peak_rss_mib`) on CPU, of ``torch.cuda.max_memory_allocated`` on
  CUDA.
- The peak resident set is read as ``VmHWM`` from ``/proc/self/status``: the same high-water mark as
  ``ru_maxrss``, but of this process image only. ``ru_maxrss`` also takes the maximum with the RSS the
  process had when it called ``exec``, which for a child of a big benchmark process is the parent's
  RSS at fork time (the ``vfork``/``fork`` copy of its address space): measured in the child of a
  1 GB parent, ``ru_maxrss`` never went below 951 MiB. ``ru_maxrss`` is the fallback off Linux.
- A worker child reports with :func:`emit_result`: one stdout line ``RESULT_PREFIX + json``, which
  :func:`run_worker` finds and parses (anything else the child prints is ignored).

Nothing here has side effects at import; only ``torch`` is imported.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "MALLOC_ENV",
    "RESULT_PREFIX",
    "PeakMemory",
    "conv_flops",
    "cpu_model",
    "emit_result",
    "interleaved_times",
    "machine_info",
    "maxrss_mib",
    "paired_ratio",
    "peak_rss_mib",
    "pick_device",
    "rss_mib",
    "run_worker",
    "summarize",
    "sync",
    "time_call",
]

#: Environment given to memory-measuring child processes (see the module docstring).
MALLOC_ENV: dict[str, str] = {"MALLOC_MMAP_THRESHOLD_": "65536"}
#: Prefix of the one stdout line in which a worker process reports its result as JSON.
RESULT_PREFIX = "BENCH_RESULT "


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU; ``"cpu"`` / ``"cuda"``: that device (CUDA must exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but torch.cuda.is_available() is False.")
    if name not in ("cpu", "cuda"):
        raise SystemExit(f"device must be auto, cpu or cuda, got {name!r}.")
    return torch.device(name)


def sync(device: torch.device) -> None:
    """Wait for queued kernels on CUDA (nothing to do on CPU), so wall-clock times are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of one call of ``fn`` (synchronised on CUDA)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved_times(
    runs: dict[str, Callable[[], object]],
    repeats: int,
    device: torch.device,
    warmup: int = 1,
    between: Callable[[], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """Time every callable ``repeats`` times, round-robin, after ``warmup`` untimed calls each.

    Round ``r`` starts with candidate ``r mod n`` (the order rotates), so neither a slow start nor a
    slow-down from another job on the machine lands on one candidate only. ``between`` (e.g. a
    ``gc.collect``) runs untimed before every call. Returns the list of times per name, in round order.
    """
    names = list(runs)
    for name in names:
        for _ in range(warmup):
            if between is not None:
                between()
            runs[name]()
        sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)] if names else []
        for name in order:
            if between is not None:
                between()
            times[name].append(time_call(runs[name], device))
        if progress is not None:
            load = f" (load {os.getloadavg()[0]:.1f})" if hasattr(os, "getloadavg") else ""
            progress(f"round {r + 1}/{repeats}{load}: " + ", ".join(f"{n} {times[n][-1]:.3f}s" for n in names))
    return times


def summarize(times: Sequence[float]) -> dict[str, float | int]:
    """Median, min, max and count of a list of times (seconds)."""
    if not times:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": len(times)}


def paired_ratio(times: Sequence[float], baseline: Sequence[float]) -> float:
    """Median over rounds of ``times[r] / baseline[r]`` (both from one :func:`interleaved_times` run).

    Pairing the two candidates' times of the same round cancels slow drift of the machine's speed.
    """
    pairs = [t / b for t, b in zip(times, baseline) if b > 0]
    return statistics.median(pairs) if pairs else float("nan")


def conv_flops(counter: Any) -> float:
    """Convolution FLOPs (forward and backward) seen by a ``torch.utils.flop_counter.FlopCounterMode``."""
    counts = counter.get_flop_counts().get("Global", {})
    return float(sum(n for op, n in counts.items() if "convolution" in str(op)))


def maxrss_mib() -> float:
    """This process's peak resident set size so far (``ru_maxrss``, KiB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_rss_mib() -> float:
    """This process image's peak resident set size in MiB: ``VmHWM`` (Linux), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, IndexError, ValueError):
        pass
    return maxrss_mib()


def rss_mib() -> float:
    """This process's current resident set size in MiB (``/proc/self/statm``; ``nan`` where absent)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Peak memory increase over a baseline, in MiB: RSS high-water mark on CPU, allocator peak on CUDA.

    Call :meth:`start` right before the measured work (model built, inputs created), :meth:`peak_mib`
    after it. On CPU this is ``peak_rss(after) - peak_rss(start)`` (:func:`peak_rss_mib`, the
    ``ru_maxrss`` high-water mark), only meaningful in a fresh process started with :data:`MALLOC_ENV`
    (see the module docstring). :meth:`start` first resets the high-water mark to the current resident
    set (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``) so that ``peak_rss(start)`` is the current
    RSS, not the peak of the imports; where that is not possible (``hiwater_reset`` False in
    :meth:`details`) a measured peak below the earlier one reads 0.
    On CUDA it is ``max_memory_allocated - memory_allocated(start)`` after ``reset_peak_memory_stats``.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base_peak = float("nan")
        self.base_rss = float("nan")
        self.base_cuda = 0
        self.hiwater_reset = False

    @staticmethod
    def reset_hiwater() -> bool:
        """Reset this process's peak-RSS mark to its current RSS (Linux); True when it worked."""
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return False
        return True

    def start(self) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base_cuda = torch.cuda.memory_allocated(self.device)
        self.hiwater_reset = self.reset_hiwater()
        self.base_peak = peak_rss_mib()
        self.base_rss = rss_mib()

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            sync(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base_cuda) / 2**20
        return peak_rss_mib() - self.base_peak

    def details(self) -> dict[str, float | str | bool]:
        """Raw figures, for the JSON output."""
        out: dict[str, float | str | bool] = {
            "kind": "cuda_max_memory_allocated" if self.device.type == "cuda" else "peak_rss_increase",
            "hiwater_reset": self.hiwater_reset,
            "baseline_peak_rss_mib": self.base_peak,
            "baseline_rss_mib": self.base_rss,
            "peak_rss_mib": peak_rss_mib(),
            "ru_maxrss_mib": maxrss_mib(),
        }
        if self.device.type == "cuda":
            out["baseline_cuda_allocated_mib"] = self.base_cuda / 2**20
        return out


def emit_result(result: dict[str, Any]) -> None:
    """Print a worker's result as the single line that :func:`run_worker` looks for."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_worker(argv: Sequence[str], timeout: float | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python *argv`` in a fresh process with :data:`MALLOC_ENV` and return its result dict.

    Raises RuntimeError (with the end of the child's output) when it fails or reports nothing.
    """
    child_env = dict(os.environ)
    child_env.update(MALLOC_ENV)
    if env:
        child_env.update(env)
    proc = subprocess.run(
        [sys.executable, *argv], env=child_env, capture_output=True, text=True, timeout=timeout, check=False
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (proc.stdout + proc.stderr)[-3000:]
    raise RuntimeError(f"worker {' '.join(argv)} exited with {proc.returncode} and no result:\n{tail}")


def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: torch.device) -> dict[str, Any]:
    """What a benchmark figure depends on: CPU, cores, threads, load, library versions, device."""
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    try:
        info["load_average"] = list(os.getloadavg())
    except OSError:
        info["load_average"] = None
    try:
        import monai

        info["monai"] = monai.__version__
    except ImportError:
        info["monai"] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info
