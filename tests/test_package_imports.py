"""``import widebnn`` alone gives every subpackage, in a fresh interpreter."""

import subprocess
import sys


def test_import_widebnn_exposes_every_subpackage():
    code = (
        "import widebnn\n"
        "print(widebnn.samplers.hmc.__name__, widebnn.samplers.rejection.__name__)\n"
        "print(widebnn.kernels.Dense.__name__, widebnn.kernels.Tanh.__name__)\n"
        "print(widebnn.data.toy_regression.__name__, widebnn.gp.posterior.__name__)\n"
        "print(widebnn.compare.predictive.__name__)\n"
        "print(widebnn.diagnostics.to_inference_data.__name__)\n"
        "print(widebnn.plots.plot_trace.__name__, widebnn.WideBNN.__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [
        "hmc",
        "rejection",
        "Dense",
        "Tanh",
        "toy_regression",
        "posterior",
        "predictive",
        "to_inference_data",
        "plot_trace",
        "WideBNN",
    ]
