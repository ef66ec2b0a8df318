"""Test-wide settings: float64, strict promotion, writable caches, 4 CPU devices.

Everything here runs before the first JAX operation, which is when the device count
and dtype settings are read.
"""

import os
import tempfile

import pytest

# JAX's CPU Cholesky/QR call OpenBLAS; its default thread pool made a 128x128
# Cholesky 200x slower on a busy 2-core machine. One thread per call.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("MPLBACKEND", "Agg")
_cache = tempfile.mkdtemp(prefix="widebnn-test-cache-")
os.environ.setdefault("XDG_CACHE_HOME", _cache)
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_cache, "matplotlib"))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


# --- the fast tier -----------------------------------------------------------------
# Tests measured slow (tests/_support/slow_tests.txt: one node id per line, with the
# seconds it took and the machine's load) join the `slow` tier without a decorator in
# every file; a line without "[" marks every case of that test function.
_SLOW_LIST = os.path.join(os.path.dirname(__file__), "_support", "slow_tests.txt")


def _measured_slow() -> set[str]:
    with open(_SLOW_LIST) as f:
        return {
            line.split("#", 1)[0].strip() for line in f if line.split("#", 1)[0].strip()
        }


def pytest_collection_modifyitems(config, items):
    slow = _measured_slow()
    for item in items:
        rel = item.nodeid
        if rel in slow or rel.split("[", 1)[0] in slow:
            item.add_marker(pytest.mark.slow)


# --- compiled code is released when a worker holds too much of it ---------------------
# Each XLA:CPU executable maps ~3 memory regions, and JAX keeps every executable in its
# caches for the life of the process. A pytest-xdist worker of the full suite compiled
# enough to pass the kernel's limit of 65,530 mappings (`vm.max_map_count`), and the
# next compilation segfaulted inside XLA (seen in CI: a worker died in
# test_digits_nngp_runs_on_tiny_settings, which passes on its own). After a module,
# the caches are cleared once the process holds more than a third of that limit
# (clearing after every module would recompile what later modules share).

_MAPPINGS_BEFORE_CLEARING = 20_000


def _memory_mappings() -> int:
    try:
        with open(f"/proc/{os.getpid()}/maps", "rb") as f:
            return sum(1 for _ in f)
    except OSError:  # not Linux: no limit of this kind to guard against
        return 0


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    yield
    if _memory_mappings() > _MAPPINGS_BEFORE_CLEARING:
        jax.clear_caches()
