"""Timing and memory harness shared by the widebnn and Neural Tangents workers.

Standalone (stdlib, numpy and jax only) so that it runs on both stacks: widebnn's
current jax and NT 0.6.5's jax 0.4.25. Linux only (reads ``/proc/self``).
"""

import ctypes
import os
import platform
import resource
import time

import jax
import jaxlib
import numpy as np


def _rss_mib():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _hwm_mib():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _release_and_reset_peak():
    """Returns freed heap memory to the OS, then resets the peak-RSS mark.

    Returns ``False`` where either is unavailable (then no execution peak is given).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except (OSError, AttributeError):
        return False


def measure(jitted, args, repeats, static=None):
    """Compiles ``jitted`` ahead of time and times ``repeats`` calls on ``args``.

    Args:
        jitted: a ``jax.jit`` function.
        args: its array arguments (a tuple; ``None`` entries are allowed).
        repeats: number of timed calls after the first one.
        static: keyword arguments that are static for ``jitted`` (e.g. ``get``).

    Returns:
        A dict: ``compile_s`` (trace, lower and compile), ``first_call_s``
        (``compile_s`` plus the first execution), ``times_s``, ``steady_s`` (median
        wall time), ``cpu_s`` (median CPU time of the process, all threads),
        ``baseline_mib`` (RSS before compiling), ``exec_mib`` (peak RSS during the
        executions minus the RSS just before them, NaN if unavailable),
        ``peak_mib`` (the process's peak RSS, compilation included), versions,
        device, dtype and ``checksum`` (sums of the outputs, as float64).
    """
    static = static or {}
    baseline = _rss_mib()
    start = time.perf_counter()
    compiled = jitted.lower(*args, **static).compile()
    compile_s = time.perf_counter() - start
    has_reset = _release_and_reset_peak()
    before = _rss_mib()
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    first_s = time.perf_counter() - start
    checksum = [float(np.asarray(o, np.float64).sum()) for o in out]
    dtype = str(out[0].dtype)
    del out
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    exec_mib = _hwm_mib() - before if has_reset else float("nan")
    device = jax.devices()[0]
    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "python": platform.python_version(),
        "device": f"{device.platform}: {device.device_kind}",
        "dtype": dtype,
        "compile_s": compile_s,
        "first_call_s": compile_s + first_s,
        "times_s": times,
        "steady_s": float(np.median(times)),
        "cpu_s": float(np.median(cpu_times)),
        "baseline_mib": baseline,
        "exec_mib": exec_mib,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "checksum": checksum,
    }
