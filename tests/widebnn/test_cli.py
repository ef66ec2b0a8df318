"""The `widebnn` command, run as a user runs it."""

import subprocess
import sys

import numpy as np


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "widebnn.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


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


def test_bad_arguments_exit_2_without_traceback():
    result = _run("kernel", "--activation", "tanh")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "invalid choice" in result.stderr
    result = _run("kernel", "--depth", "0")
    assert result.returncode != 0 and "Traceback" not in result.stderr
