"""A deep ReLU network's GP, written independently of the library (numpy).

The NNGP/NTK recursion of ``depth x (Dense, Relu), Dense`` in the NTK
parameterisation with the arc-cosine kernel written with ``arccos`` (the library
uses ``arctan2``), the matching ``widebnn.kernels`` network, and small data sets
of one shape (so compiled kernels are reused between tests).
"""

from __future__ import annotations

import numpy as np

from widebnn import kernels

W_STD, B_STD = 1.4, 0.3


def relu_kernels_numpy(x1, x2, w_std, b_std, depth):
    """NNGP and NTK of ``depth`` x (Dense, Relu) then Dense, NTK parameterisation."""
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    d = x1.shape[1]
    k12 = w_std**2 / d * x1 @ x2.T + b_std**2
    k11 = w_std**2 / d * np.sum(x1**2, 1) + b_std**2
    k22 = w_std**2 / d * np.sum(x2**2, 1) + b_std**2
    t12 = k12
    for _ in range(depth):
        norm = np.sqrt(np.outer(k11, k22))
        cos = np.clip(k12 / norm, -1.0, 1.0)
        cos = np.where(cos > 1 - 1e-12, 1.0, cos)  # equal inputs: exactly 1
        theta = np.arccos(cos)
        v = norm * (np.sin(theta) + (np.pi - theta) * cos) / (2 * np.pi)
        v_dot = (np.pi - theta) / (2 * np.pi)
        k12 = w_std**2 * v + b_std**2
        t12 = k12 + w_std**2 * v_dot * t12
        k11 = w_std**2 * k11 / 2 + b_std**2
        k22 = w_std**2 * k22 / 2 + b_std**2
    return k12, t12


def relu_network(w_std=W_STD, b_std=B_STD, depth=1, width=64):
    layers = []
    for _ in range(depth):
        layers += [kernels.Dense(width, w_std, b_std), kernels.Relu()]
    return kernels.serial(*layers, kernels.Dense(1, w_std, b_std))


def data(n=12, m=5, d=3, out=2, seed=0):
    # one shape everywhere, so that compiled kernels are reused between tests
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x_test = rng.normal(size=(m, d))
    y = np.stack([np.sin(x.sum(1)), np.cos(x[:, 0])], 1)[:, :out]
    return x, x_test, y + 0.1 * rng.normal(size=y.shape)
