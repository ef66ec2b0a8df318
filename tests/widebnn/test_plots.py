"""``widebnn.plots``: every plot writes a non-blank PNG headless; bad input is
refused with the argument named."""

from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest

from widebnn import compare, plots

PNG = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    with open(path, "rb") as file:
        assert file.read(8) == PNG
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 50 and image.shape[1] > 50
    assert image[..., :3].std() > 0.01  # something was drawn


@pytest.fixture(scope="module")
def gp_and_draws():
    rng = np.random.default_rng(0)
    x = np.linspace(-2, 2, 9)[:, None]
    cov = np.exp(-0.5 * (x - x.T) ** 2) + 1e-9 * np.eye(9)
    mean = np.sin(x)
    draws = mean[:, 0] + rng.standard_normal((2, 50, 9)) @ np.linalg.cholesky(cov).T
    return x, mean, cov, draws[..., None]


def test_plot_predictive(gp_and_draws, tmp_path):
    x, mean, cov, draws = gp_and_draws
    path = plots.plot_predictive(
        draws, (mean, cov), x, tmp_path / "sub" / "pred.png",
        x_train=x[::2], y_train=mean[::2], title="bands",
    )  # fmt: skip
    assert path == str(tmp_path / "sub" / "pred.png")
    assert_png(path)
    assert_png(plots.plot_predictive(draws, (mean, np.diag(cov)), x[:, 0],
                                     tmp_path / "var.png"))  # fmt: skip
    with pytest.raises(ValueError, match="x_test"):
        plots.plot_predictive(draws, (mean, cov), np.zeros((9, 2)), tmp_path / "a.png")
    with pytest.raises(ValueError, match="level"):
        plots.plot_predictive(draws, (mean, cov), x, tmp_path / "a.png", level=1.0)
    with pytest.raises(ValueError, match="output"):
        plots.plot_predictive(draws, (mean, cov), x, tmp_path / "a.png", output=1)


def test_plot_width_sweep_from_a_table(tmp_path):
    rows = []
    for width, scale in ((4, 1.0), (16, 0.3), (64, 0.1)):
        row = {"width": width}
        for name in compare.METRICS:
            row |= {name: scale, f"{name}_se": scale / 5, f"{name}_floor": 0.01}
        rows.append(row)
    rows[2]["mmd2"] = -0.001  # an unbiased estimate below 0 is drawn at the edge
    sweep = {"rows": rows, "reference": {"w2": 0.5, "kl": 0.2, "rmse": 0.1}}
    assert_png(plots.plot_width_sweep(sweep, tmp_path / "sweep.png"))
    with pytest.raises(TypeError, match="sweep"):
        plots.plot_width_sweep([1, 2], tmp_path / "x.png")


def test_trace_rank_and_energy_plots(gp_and_draws, tmp_path):
    _, _, _, draws = gp_and_draws
    rng = np.random.default_rng(1)
    result = SimpleNamespace(
        predictions=draws,
        params={"readout": {"W": rng.normal(size=(2, 50, 6, 1))}},
        sample_stats={"energy": rng.normal(size=(2, 50)),
                      "diverging": np.zeros((2, 50), bool)},
    )  # fmt: skip
    assert_png(plots.plot_trace(result, tmp_path / "trace.png"))
    assert_png(plots.plot_trace(result, tmp_path / "rank.png", kind="rank"))
    assert_png(plots.plot_energy(result, tmp_path / "energy.png"))
    with pytest.raises(ValueError, match="energy"):
        plots.plot_energy(draws, tmp_path / "e.png")
    with pytest.raises(ValueError, match="kind"):
        plots.plot_trace(result, tmp_path / "t.png", kind="pair")
