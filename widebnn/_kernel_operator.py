r"""A training kernel as an operator: :math:`(K + s I) V` computed tile by tile.

For conjugate gradients (:mod:`widebnn._cg`) the ``N x N`` kernel is never needed
as one matrix: its tiles on and above the diagonal are computed from the network
(``kernel(x_i, x_j)`` on blocks of ``tile`` inputs, the diagonal tiles with
``x2=None`` as the unbatched kernel does) and either kept (``cache=True``: the
upper triangle, about half the dense matrix) or recomputed at every product
(memory ``O(tile^2)`` besides the vectors). The last block is padded with copies
of the first input, so every tile has one shape and compiles once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _gp_core


class KernelOperator:
    """:math:`V \\mapsto (K + s I) V` for the ``name`` kernel of ``kernel`` on ``x``.

    Args:
        kernel: a :class:`widebnn.kernels.Layer` or a callable ``kernel(x1, x2,
            get)`` (see :func:`widebnn.gp.posterior`).
        x: ``(N, ...)`` inputs.
        name: ``"nngp"`` or ``"ntk"``.
        shift: ``s``, added to the diagonal (noise plus regulariser).
        tile: inputs per tile, ``>= 1``.
        cache: keep the tiles after the first product.

    Attributes:
        tiles_computed: kernel tiles evaluated so far (a measure of the cost).
    """

    def __init__(self, kernel, x, name: str, shift, *, tile: int, cache: bool):
        if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
            raise ValueError(f"tile must be an integer >= 1, got {tile!r}.")
        self._kernel = kernel
        self._fn = _gp_core.as_kernel_fn(kernel)
        self.name = name
        self.shift = shift
        self.n = x.shape[0]
        self.tile = min(tile, self.n)
        self.blocks = -(-self.n // self.tile)
        padded = self.blocks * self.tile
        fill = jnp.repeat(x[:1], padded - self.n, axis=0)
        self._x = jnp.concatenate([x, fill], axis=0)
        self._cache: dict[tuple[int, int], jax.Array] | None = {} if cache else None
        self.tiles_computed = 0

    def _inputs(self, i: int) -> jax.Array:
        return self._x[i * self.tile : (i + 1) * self.tile]

    def _tile(self, i: int, j: int) -> jax.Array:
        if self._cache is not None and (i, j) in self._cache:
            return self._cache[(i, j)]
        x2 = None if i == j else self._inputs(j)
        value = _gp_core.evaluate(
            self._fn, self._inputs(i), x2, (self.name,), "kernel(x_train tile)"
        )[self.name]
        self.tiles_computed += 1
        if self._cache is not None:
            self._cache[(i, j)] = value
        return value

    def diagonal(self) -> jax.Array:
        """``(N,)`` the kernel's diagonal (without the shift)."""
        x = self._x[: self.n]
        diagonal = _gp_core.kernel_diagonal(self._kernel, self._fn, x, (self.name,))
        return diagonal[self.name]

    def column(self, index: int) -> jax.Array:
        """``(N,)`` the kernel's column ``index`` (without the shift)."""
        x = self._x[: self.n]
        value = _gp_core.evaluate(
            self._fn, x, x[index : index + 1], (self.name,), "kernel(x_train, x_i)"
        )
        return value[self.name][:, 0]

    def __call__(self, v: jax.Array) -> jax.Array:
        """``(N, k) -> (N, k)``: :math:`(K + s I) v`."""
        t, padded = self.tile, self.blocks * self.tile
        v_padded = jnp.zeros((padded, v.shape[1]), v.dtype).at[: self.n].set(v)
        parts = [jnp.zeros((t, v.shape[1]), v.dtype) for _ in range(self.blocks)]
        for i in range(self.blocks):
            v_i = v_padded[i * t : (i + 1) * t]
            for j in range(i, self.blocks):
                k_ij = self._tile(i, j).astype(v.dtype)
                parts[i] = parts[i] + k_ij @ v_padded[j * t : (j + 1) * t]
                if j != i:
                    parts[j] = parts[j] + k_ij.T @ v_i
        return jnp.concatenate(parts, axis=0)[: self.n] + self.shift * v
