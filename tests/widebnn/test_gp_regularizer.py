"""``diag_reg`` in the GP log marginal likelihood, against scipy.

Oracle: ``scipy.stats.multivariate_normal`` with the covariance written out in
numpy, ``C = K + (noise_var + lambda) I`` with ``lambda = diag_reg * trace(K) / N``
(relative, the Neural Tangents convention) or ``diag_reg`` itself (absolute), for a
``Dense`` kernel ``K = W^2 x x^T / d + b^2`` (closed form). The posterior's use of
``diag_reg`` is tested in ``test_gp.py``; this closes the same hole in the
likelihood (and so in ``fit_hyperparameters``), where it was not tested.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from widebnn import gp, kernels

W_STD, B_STD = 1.3, 0.4


@pytest.mark.parametrize("absolute", [False, True])
def test_log_marginal_likelihood_adds_diag_reg_to_the_noise(absolute):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3))
    y = rng.normal(size=(7, 2))
    noise_var, diag_reg = 0.05, 0.3
    k = W_STD**2 * x @ x.T / 3 + B_STD**2
    reg = diag_reg if absolute else diag_reg * np.trace(k) / len(x)
    cov = k + (noise_var + reg) * np.eye(len(x))
    expected = sum(
        scipy.stats.multivariate_normal(np.zeros(len(x)), cov).logpdf(y[:, j])
        for j in range(y.shape[1])
    )
    value = gp.log_marginal_likelihood(
        kernels.Dense(1, W_STD, B_STD),
        x,
        y,
        noise_var=noise_var,
        diag_reg=diag_reg,
        diag_reg_absolute_scale=absolute,
    )
    np.testing.assert_allclose(value, expected, rtol=1e-12)
