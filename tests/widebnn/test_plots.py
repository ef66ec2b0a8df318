"""``widebnn.plots``: every plot writes a non-blank PNG headless; legends name how
the draws were made; ArviZ panel titles clear the tick labels; bad input is refused
with the argument named."""

from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from widebnn import compare, plots

# Short plumbing runs: convergence warnings are tested in tests/samplers.
pytestmark = pytest.mark.filterwarnings("ignore::widebnn.samplers.SamplerWarning")

PNG = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    with open(path, "rb") as file:
        assert file.read(8) == PNG
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 50 and image.shape[1] > 50
    assert image[..., :3].std() > 0.01  # something was drawn


@pytest.fixture
def saved_figures(monkeypatch):
    """The figures the plots save, recorded as they are saved (before ArviZ's
    pyplot figures are closed)."""
    figures = []
    original = plots._save

    def record(fig, path):
        out = original(fig, path)
        figures.append(fig)
        return out

    monkeypatch.setattr(plots, "_save", record)
    return figures


def legend_texts(fig):
    return [text.get_text() for ax in fig.axes if ax.get_legend()
            for text in ax.get_legend().get_texts()]  # fmt: skip


def title_tick_overlaps(fig):
    """(title, tick label) pairs whose drawn boxes intersect, over all axes (the
    figure drawn again on an Agg canvas, with its own layout engine)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    titles = [
        (ax.get_title(), ax.title.get_window_extent(renderer))
        for ax in fig.axes
        if ax.get_title()
    ]
    ticks = [
        (label.get_text(), label.get_window_extent(renderer))
        for ax in fig.axes
        for label in ax.get_xticklabels() + ax.get_yticklabels()
        if label.get_visible() and label.get_text()
    ]
    return [(t, k) for t, tbox in titles for k, kbox in ticks if tbox.overlaps(kbox)]


@pytest.fixture(scope="module")
def gp_and_draws():
    rng = np.random.default_rng(0)
    x = np.linspace(-2, 2, 9)[:, None]
    cov = np.exp(-0.5 * (x - x.T) ** 2) + 1e-9 * np.eye(9)
    mean = np.sin(x)
    draws = mean[:, 0] + rng.standard_normal((2, 50, 9)) @ np.linalg.cholesky(cov).T
    return x, mean, cov, draws[..., None]


def test_plot_predictive(gp_and_draws, tmp_path, saved_figures):
    x, mean, cov, draws = gp_and_draws
    path = plots.plot_predictive(
        draws, (mean, cov), x, tmp_path / "sub" / "pred.png",
        x_train=x[::2], y_train=mean[::2], title="bands",
    )  # fmt: skip
    assert path == str(tmp_path / "sub" / "pred.png")
    assert_png(path)
    assert legend_texts(saved_figures[-1])[2:] == [
        "samples 95%",
        "samples mean",
        "data",
    ]
    # the legend names the sampler: exact rejection draws are not "MCMC"
    exact = SimpleNamespace(predictions=draws, num_proposals=10**4,
                            settings={"bound": "data"})  # fmt: skip
    ghmc = SimpleNamespace(predictions=draws, settings={"algorithm": "ghmc"})
    for result, name in ((exact, "exact (rejection)"), (ghmc, "MCMC (ghmc)")):
        plots.plot_predictive(result, (mean, cov), x, tmp_path / "named.png")
        texts = legend_texts(saved_figures[-1])
        assert texts[2:] == [f"{name} 95%", f"{name} mean"], texts
    plots.plot_predictive(exact, (mean, cov), x, tmp_path / "own.png", label="NUTS")
    assert legend_texts(saved_figures[-1])[2:] == ["NUTS 95%", "NUTS mean"]
    assert_png(plots.plot_predictive(draws, (mean, np.diag(cov)), x[:, 0],
                                     tmp_path / "var.png"))  # fmt: skip
    with pytest.raises(ValueError, match="x_test"):
        plots.plot_predictive(draws, (mean, cov), np.zeros((9, 2)), tmp_path / "a.png")
    with pytest.raises(ValueError, match="level"):
        plots.plot_predictive(draws, (mean, cov), x, tmp_path / "a.png", level=1.0)
    with pytest.raises(ValueError, match="output"):
        plots.plot_predictive(draws, (mean, cov), x, tmp_path / "a.png", output=1)


def test_plot_width_sweep_from_a_table(tmp_path, saved_figures):
    rows = []
    for width, scale in ((4, 1.0), (16, 0.3), (64, 0.1)):
        row = {"width": width}
        for name in compare.METRICS:
            row |= {name: scale, f"{name}_se": scale / 5, f"{name}_floor": 0.01}
        rows.append(row)
    rows[2]["mmd2"] = -0.001  # an unbiased estimate below 0 is drawn at the edge
    sweep = {"rows": rows, "reference": {"w2": 0.5, "kl": 0.2, "rmse": 0.1}}
    assert_png(plots.plot_width_sweep(sweep, tmp_path / "sweep.png"))
    assert "samples ± s.e." in legend_texts(saved_figures[-1])
    for row in rows:
        row["sampler"] = "rejection"
    plots.plot_width_sweep(sweep, tmp_path / "exact.png")
    texts = legend_texts(saved_figures[-1])
    assert "exact (rejection) ± s.e." in texts and not any("MCMC" in t for t in texts)
    with pytest.raises(TypeError, match="sweep"):
        plots.plot_width_sweep([1, 2], tmp_path / "x.png")


def test_trace_rank_and_energy_plots(gp_and_draws, tmp_path, saved_figures):
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
    # ArviZ's own layout puts the second row's titles on the first row's x tick
    # labels (several overlaps at its default size); the saved figures have none
    trace, rank, energy = saved_figures
    assert len(trace.axes) == 4 and len(rank.axes) == 8
    for fig in (trace, rank, energy):
        assert title_tick_overlaps(fig) == []
    with pytest.raises(ValueError, match="energy"):
        plots.plot_energy(draws, tmp_path / "e.png")
    with pytest.raises(ValueError, match="kind"):
        plots.plot_trace(result, tmp_path / "t.png", kind="pair")
