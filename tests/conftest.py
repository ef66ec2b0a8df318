"""Test-wide settings: float64, strict promotion, writable caches, 4 CPU devices.

Everything here runs before the first JAX operation, which is when the device count
and dtype settings are read.
"""

import os
import tempfile

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
