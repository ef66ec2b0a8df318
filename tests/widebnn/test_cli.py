"""The ``widebnn`` command, run as a user runs it (subprocess, temp directories)
and, for the heavier subcommands, in-process through ``cli.main``."""

import json
import subprocess
import sys

import numpy as np
import pytest

from widebnn import cli, diagnostics


def _run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "widebnn.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


def _one_line_error(result, code=2):
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], result.stderr
    return lines[0]


@pytest.fixture
def regression_files(tmp_path):
    """A 1-D regression problem as .npz (train) and .csv (test) files."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(6, 1))
    y = np.sin(3 * x) + 0.2 * rng.normal(size=(6, 1))
    np.savez(tmp_path / "train.npz", x=x, y=y)
    x_test = np.linspace(-2, 2, 5)[:, None]
    np.savetxt(tmp_path / "test.csv", x_test, delimiter=",", header="x")
    return tmp_path


def test_kernel_demo_prints_both_kernels():
    result = _run("kernel", "--demo", "--n", "3", "--depth", "1")
    assert result.returncode == 0, result.stderr
    assert "NNGP kernel:" in result.stdout and "NTK:" in result.stdout
    # the printed NNGP of a one-hidden-layer ReLU network on unit vectors:
    # diagonal = W^2 (W^2 / 2 + b^2) / 2 + b^2 with q = W^2 * 1/2 + b^2 (inputs have
    # squared norm 1 over 2 channels).
    W, b = 1.5, 0.05
    q = W**2 * 0.5 + b**2
    expected = W**2 * q / 2 + b**2
    first = result.stdout.split("NNGP kernel:")[1].split("NTK:")[0]
    value = float(first.replace("[", " ").split()[0])
    np.testing.assert_allclose(value, expected, rtol=1e-3)


def test_help_for_every_subcommand():
    for command in ("demo", "kernel", "sample", "compare"):
        result = _run(command, "--help")
        assert result.returncode == 0 and "usage: widebnn" in result.stdout


@pytest.mark.parametrize(
    "args, match",
    [
        (("kernel", "--activation", "tanh"), "invalid choice"),
        (("kernel", "--depth", "0"), "--depth must be >= 1"),
        (("sample",), "--data"),
        (("sample", "--data", "missing.npz"), "--data: no such file"),
        (("compare", "--data", "train.npz", "--sampler", "x"), "invalid choice"),
        (("sample", "--data", "train.npz", "--width", "0"), "--width must be >= 1"),
        (("sample", "--data", "train.npz", "--arch", "arch.json"), "unknown layer"),
        (("sample", "--data", "train.npz", "--test", "bad.csv"), "--test"),
        (
            ("sample", "--data", "train.npz", "--reparam", "none", "--exact-readout"),
            "exact_readout",
        ),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(regression_files, args, match):
    (regression_files / "arch.json").write_text('{"layers": [{"layer": "Nope"}]}')
    (regression_files / "bad.csv").write_text("1,2\n3,4\n")  # 2 columns, x is 1
    line = _one_line_error(_run(*args, cwd=regression_files))
    assert match in line


def test_kernel_on_user_data_writes_the_kernels(regression_files):
    out = regression_files / "k"
    result = _run(
        "kernel",
        "--data",
        "train.npz",
        "--test",
        "test.csv",
        "--width",
        "8",
        "--depth",
        "1",
        "--out",
        str(out),
        cwd=regression_files,
    )
    assert result.returncode == 0, result.stderr
    from widebnn import WideBNN, kernels

    saved = np.load(out / "kernels.npz")
    x = np.load(regression_files / "train.npz")["x"]
    body = kernels.serial(kernels.Dense(8, 1.4, 0.1), kernels.Relu())
    model = WideBNN(body, 8, 1.0, 0.1, 0.1)
    nngp, ntk = model.kernel(x, get=("nngp", "ntk"))
    np.testing.assert_allclose(saved["nngp"], nngp, rtol=1e-12)
    np.testing.assert_allclose(saved["ntk"], ntk, rtol=1e-12)
    assert saved["nngp_test"].shape == (5, 6)


def test_sample_and_compare_in_process(regression_files, capsys):
    """``sample`` (posterior.nc loads back) and ``compare`` (its comparison.json has
    every metric), both with the rejection sampler, which compiles in seconds; the
    GHMC path of the command runs in ``test_demo_quick_writes_its_files``."""
    out = regression_files / "s"
    common = ["--data", str(regression_files / "train.npz"), "--width", "4"]
    code = cli.main(
        ["sample", *common, "--sampler", "rejection", "--draws", "10"]
        + ["--noise-std", "0.5", "--out", str(out), "--no-progress"]
    )
    assert code == 0
    idata = diagnostics.load_inference_data(out / "posterior.nc")
    assert idata.posterior.sizes["chain"] == 1 and idata.posterior.sizes["draw"] == 10
    assert json.loads((out / "mixing.json").read_text())["predictions"]
    assert (out / "trace.png").stat().st_size > 0
    out = regression_files / "c"
    code = cli.main(
        ["compare", *common, "--test", str(regression_files / "test.csv")]
        + ["--sampler", "rejection", "--draws", "20", "--noise-std", "0.5"]
        + ["--out", str(out), "--no-progress"]
    )
    assert code == 0
    comparison = json.loads((out / "comparison.json").read_text())
    assert {"rmse", "kl", "w2", "mmd2"} <= set(comparison)
    assert (out / "predictive.png").stat().st_size > 0
    assert "rmse" in capsys.readouterr().out


def test_rejection_out_of_proposals_exits_1(regression_files):
    result = _run(
        "sample",
        "--data",
        "train.npz",
        "--sampler",
        "rejection",
        "--max-proposals",
        "3",
        "--draws",
        "50",
        "--noise-std",
        "0.01",
        "--no-progress",
        cwd=regression_files,
    )
    line = _one_line_error(result, code=1)
    assert "proposals" in line


def test_demo_quick_writes_its_files(tmp_path):
    result = _run("demo", "--quick", "--out", str(tmp_path / "demo"), "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in (
        "posterior.nc",
        "predictive_ghmc.png",
        "predictive_rejection.png",
        "trace.png",
        "energy.png",
        "comparison.json",
    ):
        assert (tmp_path / "demo" / name).stat().st_size > 0, name
    tables = json.loads((tmp_path / "demo" / "comparison.json").read_text())
    assert set(tables) == {"ghmc_vs_nngp", "rejection_vs_nngp"}
    assert "ess_bulk" in result.stdout  # the ArviZ summary
    assert str(tmp_path / "demo") in result.stdout
