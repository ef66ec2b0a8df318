"""Smoke tests of the scripts in ``examples/``: each ``main`` runs on tiny settings.

The full-size runs (and their numbers) are in the scripts' docstrings and the
project's reports; here only the plumbing is checked, with a loose accuracy floor
(chance is 0.1 on digits).
"""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_nngp_runs_on_tiny_settings():
    digits = _load("digits_nngp")
    result = digits.main(
        n_train=120, n_test=60, depth=2, fit_points=40, fit_steps=3, progress=False
    )
    assert set(result["params"]) == {"W_std", "b_std", "noise_var"}
    for key in ("nngp_accuracy", "ntk_accuracy"):
        assert 0.5 < result[key] <= 1.0, result
    with pytest.raises(ValueError, match="n_train \\+ n_test"):
        digits.load(1500, 500)
