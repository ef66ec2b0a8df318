"""NNGP and NTK classification of scikit-learn's digits with a deep ReLU network.

The infinitely wide network ``depth x (Dense, Relu), Dense`` is used as a kernel
machine: its hyperparameters (``W_std``, ``b_std`` and the noise variance) are
fitted by maximising the log marginal likelihood on a subset of the training
images (``widebnn.gp.fit_hyperparameters``), then the exact NNGP posterior
(Bayesian infinite network) and the NTK predictive (infinite ensemble trained to
convergence by gradient descent) classify the test images by the argmax of the
predictive mean. Targets are one-hot minus 0.1; every class shares one kernel.

Run: ``python examples/digits_nngp.py`` (well under 2 minutes on 2 CPU cores).
Needs scikit-learn, for the images: ``pip install -e ".[examples]"``.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import optax  # noqa: E402

try:
    from sklearn.datasets import load_digits
except ImportError:  # the data set ships with scikit-learn
    raise SystemExit(
        "examples/digits_nngp.py needs scikit-learn (it provides the digits "
        'images): pip install -e ".[examples]"'
    ) from None

from widebnn import gp, kernels  # noqa: E402


def load(n_train: int, n_test: int, seed: int = 0):
    """Random disjoint train/test splits of the 1,797 digits, images standardised."""
    digits = load_digits()
    if n_train + n_test > len(digits.target):
        raise ValueError(
            f"n_train + n_test must be at most {len(digits.target)}, got "
            f"{n_train + n_test}."
        )
    order = np.random.default_rng(seed).permutation(len(digits.target))
    x = digits.data.astype(float)
    x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    y = np.eye(10)[digits.target] - 0.1
    train, test = order[:n_train], order[n_train : n_train + n_test]
    return x[train], y[train], x[test], digits.target[test]


def architecture(depth: int):
    """``params -> Layer``: ``depth`` hidden ReLU layers sharing ``W_std, b_std``."""

    def build(params):
        layers = []
        for _ in range(depth):
            layers += [
                kernels.Dense(512, params["W_std"], params["b_std"]),
                kernels.Relu(),
            ]
        return kernels.serial(
            *layers, kernels.Dense(10, params["W_std"], params["b_std"])
        )

    return build


def main(
    n_train: int = 1000,
    n_test: int = 797,
    depth: int = 10,
    fit_points: int = 200,
    fit_steps: int = 80,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Fits the hyperparameters, then reports NNGP and NTK test accuracies.

    Args:
        n_train: training images (``n_train + n_test <= 1797``).
        n_test: test images.
        depth: hidden layers.
        fit_points: training images used for the marginal-likelihood fit.
        fit_steps: Adam steps of the fit.
        seed: the split.
        progress: show progress bars.

    Returns:
        ``{"nngp_accuracy", "ntk_accuracy", "params", "log_marginal_likelihood",
        "seconds"}``.
    """
    start = time.perf_counter()
    x_train, y_train, x_test, labels = load(n_train, n_test, seed)
    build = architecture(depth)
    fit = gp.fit_hyperparameters(
        build,
        {"W_std": 1.3, "b_std": 0.3, "noise_var": 0.01},
        x_train[:fit_points],
        y_train[:fit_points],
        optimizer=optax.adam(0.08),
        steps=fit_steps,
        progress=progress,
    )
    net = build(fit.params)
    noise = fit.params["noise_var"]

    nngp = gp.posterior(net, x_train, y_train, noise_var=noise, get="nngp")
    nngp_mean = nngp.predict(x_test, full_cov=False).mean
    # The NTK gets the same ridge relative to its mean diagonal as the NNGP had.
    relative = noise / float(nngp.mean_diagonal)
    ntk = gp.posterior(
        net, x_train, y_train, noise_var=0.0, diag_reg=relative, get="ntk"
    )
    ntk_mean = ntk.predict(x_test, full_cov=False).mean

    def accuracy(mean):
        return float(np.mean(np.argmax(np.asarray(mean), axis=1) == labels))

    return {
        "nngp_accuracy": accuracy(nngp_mean),
        "ntk_accuracy": accuracy(ntk_mean),
        "params": fit.params,
        "log_marginal_likelihood": fit.log_marginal_likelihood,
        "seconds": time.perf_counter() - start,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=797)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--fit-points", type=int, default=200)
    parser.add_argument("--fit-steps", type=int, default=80)
    args = parser.parse_args()
    result = main(
        args.n_train, args.n_test, args.depth, args.fit_points, args.fit_steps
    )
    params = ", ".join(f"{k}={v:.4g}" for k, v in result["params"].items())
    print(f"fitted hyperparameters: {params}")
    print(
        f"log marginal likelihood (fit subset): {result['log_marginal_likelihood']:.2f}"
    )
    print(
        f"test accuracy on {args.n_test} images ({args.n_train} training): "
        f"NNGP {result['nngp_accuracy']:.4f}, NTK {result['ntk_accuracy']:.4f}"
    )
    print(f"total time {result['seconds']:.1f} s")
