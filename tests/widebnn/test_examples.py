"""Smoke tests of the scripts in ``examples/``: each ``main`` runs on tiny settings.

The full-size runs (and their numbers) are in the scripts' docstrings and the
project's reports; here only the plumbing is checked, with a loose accuracy floor
(chance is 0.1 on digits).
"""

from __future__ import annotations

import math

import pytest
from _examples import load_example

pytestmark = pytest.mark.slow  # CI also runs every example at full size


def test_digits_nngp_runs_on_tiny_settings():
    digits = load_example("digits_nngp")
    result = digits.main(
        n_train=120, n_test=60, depth=2, fit_points=40, fit_steps=3, progress=False
    )
    assert set(result["params"]) == {"W_std", "b_std", "noise_var"}
    for key in ("nngp_accuracy", "ntk_accuracy"):
        assert 0.5 < result[key] <= 1.0, result
    with pytest.raises(ValueError, match="n_train \\+ n_test"):
        digits.load(1500, 500)


def test_exact_vs_mcmc_runs_on_tiny_settings(tmp_path):
    """Rejection + NNGP + plot; the GHMC branch (``hmc_samples > 0``) is left out
    here because compiling the ``hmc`` driver alone takes ~15-30 s on 2 cores (the
    driver is tested in tests/samplers)."""
    example = load_example("exact_vs_mcmc")
    out = tmp_path / "bands.png"
    result = example.main(
        width=4, n_train=4, exact_samples=20, hmc_samples=0, out=str(out),
        progress=False,
    )  # fmt: skip
    assert out.stat().st_size > 10_000
    assert 0 < result["acceptance_rate"] <= 1
    assert math.isfinite(result["log_evidence"]) and result["log_evidence_stderr"] > 0
    assert set(result["seconds"]) == {"exact", "nngp"}
    assert 0 <= result["exact_vs_nngp_mean"] < 10
