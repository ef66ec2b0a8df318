"""NumPyro bridge: the same ``WideBNN`` as a NumPyro model."""

from __future__ import annotations

import jax
import numpy as np

from ._draws import leaf_name


class NumPyroModel:
    r"""A :class:`widebnn.WideBNN` written as a NumPyro model.

    Calling it as ``model(x, y=None)`` inside NumPyro declares one sample site per
    parameter leaf, named by its pytree path (``body_0_W``, ``body_0_b``, ...,
    ``readout_W``, ``readout_b``) with the priors of :meth:`WideBNN.log_prior`
    (body leaves :math:`\mathcal N(0,1)`; readout as parameterised), the
    deterministic site ``f`` (network outputs ``(N, d)``) and the observed site ``y``
    :math:`\sim\mathcal N(f, \sigma^2)` (``(N, d)``) inside the plates ``obs``
    (size ``N``) and ``out`` (size ``d``): one observation per target value, so
    that ``numpyro.infer.log_likelihood`` and ``arviz.from_numpyro`` give the
    pointwise log-likelihood ``(..., N, d)`` that ``az.loo`` and ``az.waic`` need.
    ``numpyro.infer.util.log_density`` equals ``log_prior + log_likelihood``, and
    NUTS, SVI and ``Predictive`` run on it directly.

    Args:
        model: the :class:`widebnn.WideBNN`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from numpyro.infer import Predictive
        >>> from widebnn import WideBNN, kernels, numpyro_model
        >>> body = kernels.serial(kernels.Dense(8, 1.5, 0.1), kernels.Relu())
        >>> npm = numpyro_model(WideBNN(body, 8, 1.0, 0.1, noise_std=0.1))
        >>> x = jnp.linspace(-1, 1, 5)[:, None]
        >>> prior = Predictive(npm, num_samples=3)(jax.random.key(0), x)
        >>> prior["f"].shape, prior["readout_W"].shape
        ((3, 5, 1), (3, 8, 1))
    """

    def __init__(self, model):
        from ._model import WideBNN

        if not isinstance(model, WideBNN):
            raise TypeError(
                f"model must be a widebnn.WideBNN, got {type(model).__name__}."
            )
        self.model = model

    def __repr__(self) -> str:
        return f"NumPyroModel({self.model!r})"

    def _structure(self, input_shape):
        shapes = jax.eval_shape(
            lambda k: self.model.init(k, tuple(input_shape)), jax.random.key(0)
        )
        flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
        w_std, b_std = self.model._readout_scales()
        stds = {"readout_W": w_std, "readout_b": b_std}
        sites = [
            (leaf_name(path), leaf.shape, stds.get(leaf_name(path), 1.0))
            for path, leaf in flat
        ]
        return sites, treedef

    def site_names(self, input_shape) -> list[str]:
        """Names of the parameter sites, in pytree order.

        Args:
            input_shape: the shape ``(N, *S, C)`` of an input batch.
        """
        return [name for name, _, _ in self._structure(input_shape)[0]]

    def to_params(self, samples, input_shape):
        """The ``WideBNN`` parameter pytree from a dict of site values.

        Args:
            samples: ``{site: array}`` with any leading sample axes (e.g.
                ``mcmc.get_samples(group_by_chain=True)``).
            input_shape: the shape ``(N, *S, C)`` of an input batch.

        Returns:
            The parameter pytree (leaves keep the leading axes of ``samples``).

        Raises:
            KeyError: naming a missing site.
        """
        sites, treedef = self._structure(input_shape)
        missing = [name for name, _, _ in sites if name not in samples]
        if missing:
            raise KeyError(f"samples lacks the parameter sites {missing}.")
        values = [samples[name] for name, _, _ in sites]
        return jax.tree_util.tree_unflatten(treedef, values)

    def __call__(self, x, y=None):
        """The NumPyro model.

        Args:
            x: ``(N, *S, C)`` inputs.
            y: ``(N, d)`` observed targets, or ``None`` to sample them.
        """
        import numpyro
        import numpyro.distributions as dist

        shape = np.shape(x)
        if y is not None and np.shape(y) != (shape[0], self.model.out_dim):
            raise ValueError(
                f"y must have shape (N, out_dim) = {(shape[0], self.model.out_dim)}, "
                f"got {np.shape(y)}."
            )
        sites, treedef = self._structure(shape)
        values = [
            numpyro.sample(
                name, dist.Normal(0.0, std).expand(leaf_shape).to_event(len(leaf_shape))
            )
            for name, leaf_shape, std in sites
        ]
        params = jax.tree_util.tree_unflatten(treedef, values)
        f = numpyro.deterministic("f", self.model.predict(params, x))
        with (
            numpyro.plate("obs", shape[0], dim=-2),
            numpyro.plate("out", self.model.out_dim, dim=-1),
        ):
            numpyro.sample("y", dist.Normal(f, self.model.noise_std), obs=y)


def numpyro_model(model) -> NumPyroModel:
    """A NumPyro model of the same ``WideBNN`` (same priors and likelihood).

    Args:
        model: a :class:`widebnn.WideBNN`.

    Returns:
        A :class:`NumPyroModel`, callable as ``model(x, y=None)`` by NumPyro's
        ``MCMC(NUTS(...))``, ``SVI`` and ``Predictive``; ``.to_params(samples,
        x.shape)`` turns its samples back into ``WideBNN`` parameters.

    Raises:
        TypeError: if ``model`` is not a ``WideBNN``.
    """
    return NumPyroModel(model)
