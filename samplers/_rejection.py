r"""``rejection``: exact posterior draws of a Bayesian network by rejection sampling.

The readout is integrated out (the scheme of Hron et al., "Exact posterior
distributions of wide Bayesian neural networks", 2020, arXiv:2006.10541):

1. propose hidden weights :math:`\theta_{rest}` from the prior (in vectorised
   batches);
2. compute the readout-marginalised likelihood
   :math:`\ell = \prod_j\mathcal N(y_j; 0, TT^\top + \sigma^2 I)` of the features
   :math:`T(\theta_{rest})` (:func:`log_marginal_likelihood`: one Cholesky
   factorisation of the smaller of the ``N x N`` and ``(n+1) x (n+1)`` forms);
3. accept with probability :math:`\ell/M` (``log u < log l - log M``), with
   :math:`M \ge \ell` from :func:`log_likelihood_bound`;
4. for each accepted proposal draw the readout exactly from its Gaussian
   conditional (the repriorisation map with :math:`k=\sigma^2` applied to a
   standard normal :math:`\Phi_{out}`).

Every accepted :math:`\theta = (\theta_{rest}, \Theta_{out})` is an independent
exact draw of :math:`p(\theta\mid D)`. Proposal ``i`` uses the key
``fold_in(key, i)`` (split into hidden-weight, uniform and readout keys), so the
draws depend only on ``key``, not on ``batch_size``. The acceptance rate is
:math:`Z/M` with the evidence :math:`Z = p(Y) = \mathbb E_{prior}[\ell]`.
"""

from __future__ import annotations

import math
import time
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_key
from ._hmc_config import check_int as _check_int
from ._platform import batch_map, blas_single_threaded
from ._rejection_bounds import (
    BOUNDS,
    DEFAULT_MAX_SECONDS,
    RejectionBudgetError as RejectionBudgetError,
    SearchBudget,
    log_likelihood_bound,
)
from ._reprior import (
    check_data,
    log_marginal_likelihood,
    readout_factor,
    readout_forward,
)

MAX_INDEX = 2**32
"""Proposal indices are folded into the key as 32-bit integers."""
SLOT_FRACTION = 8
"""Each batch also draws the readouts of up to ``batch_size // SLOT_FRACTION``
accepted proposals (a batch with more is evaluated again for the rest)."""


class RejectionPosterior(NamedTuple):
    """Exact posterior draws from :func:`rejection`, laid out as one chain.

    Attributes:
        params: the model parameters, a pytree with leaves ``(1, num_samples, ...)``.
        predictions: ``(1, num_samples, N_pred, out_dim)`` noise-free network
            outputs :math:`f_\\theta(x_{pred})`.
        sample_stats: dict of ``(1, num_samples)`` arrays: ``log_likelihood``
            (:math:`\\log p(Y\\mid\\theta)` of the draw) and
            ``log_marginal_likelihood`` (:math:`\\log\\ell` of its hidden weights).
        settings: the sampler settings (a flat dict of Python scalars/strings),
            plus ``num_nonfinite`` (proposals whose likelihood was not finite:
            rejected), ``max_log_ratio`` (largest :math:`\\log\\ell - \\log M` seen;
            at most 0 up to rounding) and ``seconds`` (wall time, compilation
            included).
        num_accepted: number of accepted proposals (``num_samples``).
        num_proposals: proposals up to and including the last accepted one.
        acceptance_rate: ``num_accepted / num_proposals``.
        log_evidence: :math:`\\log\\hat Z`, :math:`\\hat Z` the mean of
            :math:`\\ell` over the ``num_proposals - 1`` proposals before the last
            accepted one (an unbiased estimate of :math:`Z` under this stopping
            rule; over all proposals when there is only one).
        log_evidence_stderr: its standard error (delta method,
            :math:`\\mathrm{se}(\\hat Z)/\\hat Z`).
        log_bound: :math:`\\log M`.
    """

    params: Any
    predictions: jax.Array
    sample_stats: dict[str, Any]
    settings: dict[str, Any]
    num_accepted: int
    num_proposals: int
    acceptance_rate: float
    log_evidence: float
    log_evidence_stderr: float
    log_bound: float

    @property
    def num_chains(self) -> int:
        """Number of chains (always 1)."""
        return int(self.predictions.shape[0])

    @property
    def num_draws(self) -> int:
        """Number of draws."""
        return int(self.predictions.shape[1])


def _proposal_keys(key, index):
    """Hidden-weight, uniform and readout keys of proposal ``index``."""
    return jax.random.split(jax.random.fold_in(key, index), 3)


def _hidden(model, key, x_shape):
    return model.split_readout(model.init(key, x_shape))[0]


@partial(jax.jit, static_argnums=(0, 1, 2))
def _batch(model, batch_size, num_slots, key, start, skip, x, y, x_pred, log_bound):
    """Proposals ``start .. start + batch_size - 1``: their ``log l`` and accept
    decisions, and the draws of the accepted ones ranked ``skip + 1`` to
    ``skip + num_slots`` within the batch (parameters with an exact readout draw,
    predictions at ``x_pred``, log-likelihoods; unused slots repeat proposal 0, or
    are zeros when the batch accepts nothing).

    One compiled function for both steps, so that the prior draw of the hidden
    weights (``model.init``) is compiled once and not repeated for the draws.
    """
    noise_var = float(model.noise_std) ** 2
    indices = start + jnp.arange(batch_size, dtype=jnp.uint32)

    def propose(index):
        hidden_key, uniform_key, _ = _proposal_keys(key, index)
        hidden = _hidden(model, hidden_key, x.shape)
        features = model.features(hidden, x)
        log_ell = log_marginal_likelihood(features, y, noise_var)
        log_ell = jnp.where(jnp.isfinite(log_ell), log_ell, -jnp.inf)
        # log(1 - u) with u in [0, 1): finite, so log l = -inf is always rejected.
        log_u = jnp.log1p(-jax.random.uniform(uniform_key, dtype=y.dtype))
        return hidden, features, log_ell, log_u < log_ell - log_bound

    hidden, features, log_ell, accept = jax.vmap(propose)(indices)
    eligible = accept & (jnp.cumsum(accept) > skip)
    (slots,) = jnp.nonzero(eligible, size=num_slots, fill_value=0)

    def draw(slot):
        _, _, readout_key = _proposal_keys(key, indices[slot])
        factor = readout_factor(features[slot], y, noise_var)
        phi_out = jax.random.normal(readout_key, factor.mean.shape, factor.mean.dtype)
        body = jax.tree.map(lambda leaf: leaf[slot], hidden)
        theta = model.merge_readout(body, readout_forward(factor, phi_out))
        return theta, model.predict(theta, x_pred), model.log_likelihood(theta, x, y)

    def draw_slots(slots):
        # One draw at a time on CPU: batched factorisations can deadlock there.
        return batch_map(draw, slots)

    def no_draws(slots):
        shapes = jax.eval_shape(draw_slots, slots)
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    # Most batches accept nothing: skip the readout draws then.
    draws = jax.lax.cond(jnp.any(eligible), draw_slots, no_draws, slots)
    return log_ell, accept, draws


def _check_options(
    model, x, y, num_samples, bound, batch_size, max_proposals, max_seconds
):
    x, y = check_data(model, x, y)
    num_samples = _check_int(num_samples, "num_samples", 1)
    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}.")
    batch_size = _check_int(batch_size, "batch_size", 1)
    if max_proposals is None:
        max_proposals = MAX_INDEX
    elif (
        isinstance(max_proposals, bool)
        or not isinstance(max_proposals, int | np.integer)
        or not 1 <= max_proposals <= MAX_INDEX
    ):
        raise ValueError(
            f"max_proposals must be None or an integer in [1, 2**32], got "
            f"{max_proposals!r}."
        )
    if max_seconds is None:
        max_seconds = math.inf
    elif (
        isinstance(max_seconds, bool)
        or not isinstance(max_seconds, int | float | np.integer | np.floating)
        or not 0 < max_seconds < math.inf
    ):
        raise ValueError(
            f"max_seconds must be None or a finite number > 0, got {max_seconds!r}."
        )
    return x, y, num_samples, batch_size, int(max_proposals), float(max_seconds)


def rejection(
    model,
    x,
    y,
    *,
    num_samples: int,
    key,
    bound: str = "data",
    batch_size: int = 1024,
    max_proposals: int | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    x_pred=None,
    progress: bool = True,
) -> RejectionPosterior:
    r"""Exact posterior draws of ``model`` given ``(x, y)`` by rejection sampling.

    Hidden weights are proposed from the prior and accepted with probability
    :math:`\ell/M`, :math:`\ell` the likelihood with the readout integrated out;
    the readout of each accepted proposal is drawn from its exact Gaussian
    conditional (see the module docstring). The expected number of proposals is
    ``num_samples * M / Z``: feasible for a few to ~16 data points and a noise
    scale that is not too small (measured in ``benchmarks/README.md``).

    The progress bar shows the proposals made, the estimated acceptance rate
    :math:`\\hat Z/M` (the mean acceptance probability :math:`\\ell/M` of the
    proposals so far; with no acceptance yet also the 95 % upper bound, about
    3 / proposals) and the estimated time to the last draw. A run that cannot
    finish within ``max_seconds`` stops early: after each doubling of the number
    of proposals (from one second after the first, compiling batch on), if even
    the 99.9 % upper confidence bound on the acceptance rate (from the counts)
    and twice the measured speed put the end beyond ``max_seconds``, it raises
    :class:`RejectionBudgetError` at once, so a hopeless run ends in seconds, with
    the estimated rate, proposals and time it would need.

    Args:
        model: a model with the sampler protocol (e.g. :class:`widebnn.WideBNN`):
            ``init``, ``features``, ``split_readout``, ``merge_readout``,
            ``predict``, ``log_likelihood``, ``noise_std``, ``out_dim`` and, for
            ``bound="data"``, ``readout_b_std`` (taken as 0 when missing).
        x: ``(N, *S, C)`` training inputs.
        y: ``(N, out_dim)`` training targets (always 2-D).
        num_samples: number of exact draws wanted.
        key: a PRNG key (required); proposal ``i`` uses ``fold_in(key, i)``.
        bound: ``"data"`` (the supremum of :math:`\ell` given ``y``, bias-aware;
            much higher acceptance) or ``"prior"`` (:math:`(2\pi\sigma^2)^{-Nd/2}`).
        batch_size: static; proposals evaluated per jitted, vectorised call. Does
            not change the draws.
        max_proposals: the most proposals to make, or ``None`` (:math:`2^{32}`, the
            number of distinct proposal keys).
        max_seconds: the most wall time to spend, compilation included (default
            300: a run that needs more, or is projected to, stops with
            :class:`RejectionBudgetError`); ``None`` for no limit.
        x_pred: ``(M, *S, C)`` inputs of the predictions (default ``x``).
        progress: show a tqdm bar of accepted draws.

    Returns:
        A :class:`RejectionPosterior` (one "chain" of ``num_samples`` independent
        draws; ``params``/``predictions`` lead with ``(1, num_samples)``).

    Raises:
        ValueError: naming the argument, for bad data (``y`` not 2-D, lengths that
            differ, NaN), an unknown ``bound`` or bad counts.
        RejectionBudgetError: (a ``RuntimeError``) when ``max_proposals`` or
            ``max_seconds`` ran out before ``num_samples`` acceptances, or the
            projection above says ``max_seconds`` will; the message gives the
            estimated acceptance rate, the proposals and time the draws need, and
            what to change.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from widebnn import WideBNN, kernels, samplers
        >>> model = WideBNN(kernels.serial(kernels.Dense(4), kernels.Relu()), 4,
        ...                 1.0, 0.1, noise_std=0.5)
        >>> x = jnp.array([[-1.0], [0.0], [1.0]])
        >>> post = samplers.rejection(model, x, jnp.sin(x), num_samples=5,
        ...                           key=jax.random.key(0), progress=False)
        >>> post.predictions.shape, post.num_accepted
        ((1, 5, 3, 1), 5)

    References:
        Hron, Bahri, Novak, Pennington, Sohl-Dickstein, "Exact posterior
        distributions of wide Bayesian neural networks", 2020 (arXiv:2006.10541).
    """
    key = check_key(key)
    x, y, num_samples, batch_size, max_proposals, max_seconds = _check_options(
        model, x, y, num_samples, bound, batch_size, max_proposals, max_seconds
    )
    x_pred = x if x_pred is None else jnp.asarray(x_pred)
    if x_pred.ndim != x.ndim or x_pred.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"x_pred must have shape (M, *{x.shape[1:]}), got {x_pred.shape}."
        )
    log_bound = log_likelihood_bound(
        np.asarray(y),
        model.noise_std,
        bound=bound,
        readout_b_std=getattr(model, "readout_b_std", 0.0),
    )
    started = time.perf_counter()
    num_slots = min(num_samples, max(1, batch_size // SLOT_FRACTION))
    budget = SearchBudget(
        num_samples, log_bound, max_proposals, max_seconds, bound, started
    )
    with blas_single_threaded():  # many small factorisations: one thread is faster
        search = _search(
            partial(_batch, model, batch_size, num_slots, key, x=x, y=y, x_pred=x_pred),
            budget,
            batch_size,
            num_slots,
            progress,
        )
    params, predictions, log_lik = search["draws"]
    evidence = search["evidence"]
    settings = {
        "bound": bound,
        "num_samples": num_samples,
        "batch_size": batch_size,
        "max_proposals": max_proposals,
        "max_seconds": max_seconds,  # inf: no limit
        "noise_std": float(model.noise_std),
        "num_nonfinite": search["num_nonfinite"],
        "max_log_ratio": search["max_log_ratio"],
        "seconds": time.perf_counter() - started,
    }
    stats = {
        "log_likelihood": log_lik[None],
        "log_marginal_likelihood": np.asarray(search["log_ell"])[None],
    }
    return RejectionPosterior(
        params=jax.tree.map(lambda leaf: leaf[None], params),
        predictions=predictions[None],
        sample_stats=stats,
        settings=settings,
        num_accepted=num_samples,
        num_proposals=search["num_proposals"],
        acceptance_rate=num_samples / search["num_proposals"],
        log_evidence=evidence.log_mean(),
        log_evidence_stderr=evidence.log_mean_stderr(),
        log_bound=log_bound,
    )


def _search(batch_fn, budget, batch_size, num_slots, progress):
    """Proposes in batches until ``budget.num_samples`` acceptances (host loop).

    ``batch_fn(start, skip, log_bound=...)`` is :func:`_batch` with its static
    arguments and data bound. A batch with more than ``num_slots`` needed
    acceptances is evaluated again (same keys) for the next slots. After every
    batch that does not finish, ``budget.check()`` may end the run.
    """
    from tqdm.auto import tqdm

    draws, accepted_log_ell = [], []
    log_bound, num_samples = budget.log_bound, budget.num_samples
    num_nonfinite, max_log_ratio, start = 0, -math.inf, 0
    bar = tqdm(
        total=num_samples,
        desc="rejection",
        unit="draw",
        disable=not progress,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} draws "
        "[{elapsed}{postfix}]",
    )
    with bar:
        while True:
            log_ell, accept, slots = batch_fn(jnp.uint32(start), 0, log_bound=log_bound)
            valid = min(batch_size, budget.max_proposals - start)
            log_ell = np.asarray(log_ell)[:valid]
            hits = np.flatnonzero(np.asarray(accept)[:valid])
            need = num_samples - budget.num_accepted
            done = len(hits) >= need
            hits = hits[:need]
            for skip in range(0, len(hits), num_slots):
                if skip > 0:
                    slots = batch_fn(jnp.uint32(start), skip, log_bound=log_bound)[2]
                count = min(num_slots, len(hits) - skip)
                draws.append(jax.tree.map(lambda v, n=count: np.asarray(v)[:n], slots))
            used = int(hits[-1]) + 1 if done else valid
            num_nonfinite += int(np.sum(~np.isfinite(log_ell[:used])))
            max_log_ratio = max(
                max_log_ratio, float(np.max(log_ell[:used])) - log_bound
            )
            accepted_log_ell.extend(log_ell[hits].tolist())
            bar.update(len(hits))
            if done:
                # Mean of l over the proposals before the last acceptance: unbiased
                # for Z under the stop-at-the-k-th-acceptance rule.
                num_proposals = start + used
                budget.evidence.add(
                    log_ell[: used - 1] if num_proposals > 1 else log_ell[:1]
                )
                budget.add(used, len(hits))
                bar.set_postfix_str(budget.postfix(), refresh=False)
                break
            budget.evidence.add(log_ell)
            budget.add(valid, len(hits))
            start += valid
            bar.set_postfix_str(budget.postfix(), refresh=False)
            budget.check()
    return {
        "draws": jax.tree.map(lambda *parts: np.concatenate(parts, axis=0), *draws),
        "log_ell": accepted_log_ell,
        "num_proposals": num_proposals,
        "evidence": budget.evidence,
        "num_nonfinite": num_nonfinite,
        "max_log_ratio": max_log_ratio,
    }
