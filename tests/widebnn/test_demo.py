"""``widebnn demo`` as a user runs it: the quick smoke run, the full run (slow),
an output directory that cannot be written, and the choice of the exact subset."""

import json
import os
import re
import subprocess
import sys

import arviz as az
import numpy as np
import pytest

from widebnn import cli, diagnostics
from widebnn._demo import FULL, exact_subset

FILES = (
    "posterior.nc",
    "predictive_ghmc.png",
    "predictive_rejection.png",
    "trace.png",
    "energy.png",
    "comparison.json",
)


def _demo(*args, timeout):
    """``widebnn demo`` in a fresh interpreter, as the console script runs it:
    without the test suite's float64 switch, BLAS thread or device settings."""
    unset = ("OPENBLAS_NUM_THREADS", "XLA_FLAGS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-m", "widebnn.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _check_output(result, out):
    assert result.returncode == 0, result.stderr[-3000:]
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    tables = json.loads((out / "comparison.json").read_text())
    assert set(tables) == {"ghmc_vs_nngp", "rejection_vs_nngp"}
    assert tables["rejection_vs_nngp"]["draws"] == "exact (rejection)"
    assert tables["ghmc_vs_nngp"]["draws"] == "MCMC (ghmc)"
    assert "(float64)" in result.stdout  # the command turns float64 on itself
    assert "ess_bulk" in result.stdout  # the ArviZ summary
    assert "exact (rejection) vs GP" in result.stdout
    assert str(out) in result.stdout
    rate = float(re.search(r"acceptance rate ([0-9.e+-]+)", result.stdout)[1])
    return tables, rate


def test_demo_quick_writes_its_files(tmp_path):
    """The smoke run (about 45 s of CPU time: mostly compilation)."""
    out = tmp_path / "demo"
    result = _demo("--quick", "--out", str(out), "--no-progress", timeout=600)
    _, rate = _check_output(result, out)
    assert rate > 0.01  # NNGP evidence / bound of the 3-point subset: 0.13


@pytest.mark.slow
def test_full_demo_as_in_the_readme(tmp_path):
    """The README's main command in full (about 1 min of CPU time). The exact
    part's acceptance rate is that of the 4-point subset (5.4 % from the NNGP
    evidence over the data bound), the MCMC part's R-hat of the projections is
    below 1.05, the exact draws agree with the NNGP of the subset in mean (the
    RMSE is within 4 Monte Carlo standard errors of its floor: the finite-width
    difference at width 128 is small at this noise), and the saved posterior
    has what az.loo needs (64 pointwise log-likelihoods)."""
    out = tmp_path / "widebnn-demo"
    result = _demo("--out", str(out), timeout=1200)
    tables, rate = _check_output(result, out)
    assert 0.03 < rate < 0.09
    r_hats = [
        float(line.split()[-1])
        for line in result.stdout.splitlines()
        if line.startswith(("f_projection[", "weight_projection["))
    ]
    assert len(r_hats) == 8 and max(r_hats) < 1.05, r_hats
    exact = tables["rejection_vs_nngp"]
    assert exact["num_draws"] == FULL.exact_draws
    assert exact["rmse"] < exact["rmse_floor"] + 4 * exact["rmse_se"]
    assert re.search(r"demo finished in \d+ s", result.stdout)
    idata = diagnostics.load_inference_data(out / "posterior.nc")
    loo = az.loo(idata)
    assert loo.n_data_points == 64 and np.isfinite(loo.elpd_loo)


@pytest.mark.parametrize("where", ["/proc/nope", "/proc", "file"])
def test_unwritable_out_is_a_one_line_error(tmp_path, capsys, where):
    """Before any computation: exit code 2 and one line naming --out (a folder
    that cannot be created, one that exists but takes no files, a path through
    a file)."""
    if where == "file":
        (tmp_path / "file").write_text("")
        where = str(tmp_path / "file" / "demo")
    code = cli.main(["demo", "--out", where, "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("widebnn demo: error: --out"), err


def test_exact_subset_takes_the_nearest_distinct_points():
    x = np.array([[-2.0], [-0.8], [-0.6], [0.1], [0.05], [0.7], [1.9]])
    # targets -0.75, 0, 0.75: nearest -0.8, 0.05, 0.7
    np.testing.assert_array_equal(exact_subset(x, 3, 0.75), [1, 4, 5])
    # two targets near the same point: the second takes the next nearest
    np.testing.assert_array_equal(exact_subset(x, 2, 0.02), [4, 3])
