"""Small plausible bugs, each with the tests that must catch it.

Read by ``run_mutations.py`` (see its docstring). One entry per bug: the file, an
exact piece of its text that occurs once, the replacement, and the pytest node ids
that should fail once the replacement is made. Keep the list current as code grows:
when a hole is found, add the bug here with the test that closes it; when code
moves, ``run_mutations.py`` reports the entry as ``stale`` (its text no longer
occurs exactly once) and the entry must be refreshed.

Pytest does not collect this folder (no ``test_*.py`` files).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One bug.

    Attributes:
        name: short identifier (``--only`` selects by it).
        path: file, relative to the repository root.
        old: exact text of the file to replace (must occur exactly once).
        new: its replacement.
        tests: pytest node ids, relative to the repository root, of which at least
            one must fail.
        description: what the bug is, in words.
        note: anything a reader must know (e.g. code another branch is rewriting).
    """

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    description: str
    note: str = ""


KERNELS = "tests/kernels"
GAP = f"{KERNELS}/test_activation_gradients.py"
GRADIENT = (
    f"{GAP}::test_kernel_gradient_at_equal_inputs_is_finite_and_matches_finite_"
    "differences"
)
MASKS = f"{KERNELS}/test_mask_blocks.py"
PADDING = f"{MASKS}::test_padding_invariance_for_even_and_odd_filters"
BLOCKS = f"{MASKS}::test_cross_kernel_with_masks_equals_block_of_joint_kernel"
CONV_NTK = f"{KERNELS}/test_conv_standard_ntk.py"
SINGLE = f"{CONV_NTK}::test_single_layer_ntk_equals_empirical_ntk"
TWO = f"{CONV_NTK}::test_two_layers_ntk_equals_empirical_ntk_of_a_designed_network"
GP = "tests/widebnn/test_gp.py"
REPRIOR = "tests/samplers/test_reprior.py"
REJECTION = "tests/samplers/test_rejection.py"

MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "geometry-even-centre",
        "kernels/_geometry.py",
        "centres = jnp.arange(out_size) * stride - pads[0] + (f - 1) // 2",
        "centres = jnp.arange(out_size) * stride - pads[0] + f // 2",
        (f"{PADDING}[(2,)-Conv]", f"{PADDING}[(4, 3)-Conv]"),
        "output-mask centre off by one for even filter sizes",
    ),
    Mutation(
        "attention-cross-ignores-mask2",
        "kernels/_attention.py",
        "keep2 = keep1 if k.x1_is_x2 else keep_of(k.mask2, k.shape2[0])",
        "keep2 = keep1 if k.x1_is_x2 else keep_of(None, k.shape2[0])",
        (f"{BLOCKS}[Attention_softmax]", f"{BLOCKS}[Attention_abs_sum_emb]"),
        "attention cross kernel ignores mask2",
    ),
    Mutation(
        "hmc-fingerprint-without-key",
        "samplers/_run.py",
        '        "key": hash_key(key),\n',
        "",
        ("tests/samplers/test_checkpoint.py::test_resume_refuses_a_different_run",),
        "HMC checkpoint fingerprint omits the PRNG key (a resume with another key "
        "silently mixes two runs)",
    ),
    Mutation(
        "batched-fingerprint-without-masks",
        "kernels/_batching.py",
        '"masks": {"mask1": hash_exact(m1), "mask2": hash_exact(m2)},\n',
        "\n",
        ("tests/kernels/test_batching.py::test_checkpoint_refuses_other_masks",),
        "`batched` checkpoint fingerprint ignores the masks (stale tiles reused)",
    ),
    Mutation(
        "relu-angle-arccos",
        "kernels/_relu.py",
        "    return safe_arctan2(sin_theta, rho), sin_theta",
        "    return jnp.arccos(rho), sin_theta",
        (f"{GRADIENT}[Relu]", f"{GRADIENT}[Abs]"),
        "ReLU angle via arccos(rho) instead of arctan2 (NaN gradient at x1 == x2)",
    ),
    Mutation(
        "safe-sqrt-derivative",
        "kernels/_elementwise.py",
        "jnp.where(positive, t / (2 * jnp.where(positive, y, 1.0)), 0.0)",
        "jnp.where(positive, t / jnp.where(positive, y, 1.0), 0.0)",
        (f"{GRADIENT}[Relu]", f"{GRADIENT}[Sign]"),
        "derivative of the safe square root off by a factor 2 (finite, but wrong: "
        "only a comparison with finite differences sees it)",
    ),
    Mutation(
        "conv-standard-ntk-without-filter-size",
        "kernels/_conv.py",
        "standard=standard, fan_in=k.shape1[-1] * filter_size",
        "standard=standard, fan_in=k.shape1[-1]",
        (f"{SINGLE}[Conv1d_same-standard]", f"{TWO}[Conv2d-standard]"),
        "Conv NTK in standard parameterisation without the filter-size factor",
    ),
    Mutation(
        "conv-features-without-window-scale",
        "kernels/_conv.py",
        "return windows / jnp.sqrt(jnp.asarray(filter_size, windows.dtype))",
        "return windows",
        ("tests/kernels/test_features_conv.py::test_linear_conv_features_are_exact",),
        "Conv features concatenate the window without the 1/sqrt(|f|) scale",
    ),
    Mutation(
        "conv-local-standard-ntk-without-filter-size",
        "kernels/_conv_local.py",
        "fan_in=k.shape1[-1] * filter_size,",
        "fan_in=k.shape1[-1],",
        (f"{SINGLE}[ConvLocal1d_same-standard]", f"{TWO}[ConvLocal1d-standard]"),
        "ConvLocal NTK in standard parameterisation without the filter-size factor",
    ),
    Mutation(
        "conv-transpose-same-mask-at-window-centre",
        "kernels/_conv_transpose.py",
        '        if padding == "same":\n            for i, s in enumerate(strides):',
        "        if False:\n            for i, s in enumerate(strides):",
        (f"{PADDING}[(2,)-ConvTranspose]", f"{PADDING}[(3,)-ConvTranspose_strided]"),
        "ConvTranspose SAME output mask sampled at the window centre (even filters "
        "and strides lose padding invariance; the bug fixed with the new tests)",
    ),
    Mutation(
        "ghmc-split-without-momentum-flip",
        "samplers/_ghmc.py",
        "        proposal = hmc.flip_momentum(proposal)\n",
        "",
        (
            "tests/samplers/test_ghmc_invariance.py::"
            "test_persistent_momentum_follows_the_exact_flow",
        ),
        "GHMC with the Gaussian-split integrator without the final momentum flip",
    ),
    Mutation(
        "relu-nngp-constant",
        "kernels/_relu.py",
        "return norm * ((a - b) ** 2 / (2 * jnp.pi) * sin_theta + slope * rho)",
        "return norm * ((a - b) ** 2 / jnp.pi * sin_theta + slope * rho)",
        (
            f"{KERNELS}/test_activation_closed_forms.py::test_one_hidden_layer_relu_by_hand",
        ),
        "ReLU NNGP with the wrong constant in front of sqrt(q1 q2 - c^2)",
    ),
    Mutation(
        "attention-key-mask-comparison",
        "kernels/_attention.py",
        "keep = keep_keys[..., None, :] > 0",
        "keep = keep_keys[..., None, :] >= 0",
        (f"{KERNELS}/test_attention.py::test_padding_invariance[softmax]",),
        "attention weights given to masked keys (comparison >= instead of >)",
    ),
    Mutation(
        "gp-lml-dropped-diag-reg",
        "widebnn/_gp_core.py",
        "        diag_reg=noise_var + reg,",
        "        diag_reg=noise_var,",
        (
            "tests/widebnn/test_gp_regularizer.py::"
            "test_log_marginal_likelihood_adds_diag_reg_to_the_noise",
        ),
        "GP log marginal likelihood (and so fit_hyperparameters) drops diag_reg "
        "(was missed: no likelihood test used diag_reg)",
    ),
    Mutation(
        "gp-posterior-dropped-diag-reg",
        "widebnn/gp.py",
        "k_prior, diag_reg=noise_var + reg, absolute=True, jitter_ladder=jitter_ladder",
        "k_prior, diag_reg=noise_var, absolute=True, jitter_ladder=jitter_ladder",
        (f"{GP}::test_relative_diag_reg_adds_to_the_noise",),
        "GP posterior drops the relative regulariser diag_reg",
    ),
    Mutation(
        "ntk-gd-learning-rate-scaling",
        "widebnn/_ntk_predict.py",
        "rate = self.learning_rate / self.y_train.size",
        "rate = self.learning_rate",
        (f"{GP}::test_gradient_descent_predictive_matches_ode",),
        "NTK gradient-descent predictive without the 1/(N d) learning-rate scaling",
    ),
    Mutation(
        "checkpoint-float32-leaves",
        "samplers/_run.py",
        'return {f"leaf_{i:04d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}',
        'return {f"leaf_{i:04d}": np.asarray(leaf, np.float32) '
        "for i, leaf in enumerate(leaves)}",
        ("tests/samplers/test_checkpoint.py::test_resume_after_kill_between_chunks",),
        "sampler checkpoints written as float32 (resumed chains lose precision)",
    ),
    Mutation(
        "rejection-key-reuse",
        "samplers/_rejection.py",
        "_, _, readout_key = _proposal_keys(key, indices[slot])",
        "_, readout_key, _ = _proposal_keys(key, indices[slot])",
        (f"{REJECTION}::test_linear_regression_exact_readout_evidence_and_acceptance",),
        "rejection sampler draws the readout with the key of the accept/reject "
        "uniform (accepted proposals get biased readouts)",
        note="samplers/_rejection.py is being rewritten on the `sampler` branch; "
        "refresh `old` and `tests` after the merge.",
    ),
    Mutation(
        "rejection-data-bound-scaling",
        "samplers/_rejection_bounds.py",
        "quad = (y.T @ y - shrink * np.outer(column_sums, column_sums)) / noise_var",
        "quad = y.T @ y - shrink * np.outer(column_sums, column_sums)",
        (f"{REJECTION}::test_bounds_hold_and_are_attained",),
        "data-dependent likelihood bound without the 1/noise_var scaling",
    ),
    Mutation(
        "reprior-log-det-missing-primal",
        "samplers/_reprior.py",
        "log_det = d * (0.5 * num_features * jnp.log(kernel_reg) - log_det_s)",
        "log_det = d * (0.5 * num_features * jnp.log(kernel_reg))",
        (f"{REPRIOR}::test_log_det_matches_slogdet_of_jacfwd",),
        "repriorisation log-det Jacobian misses the Cholesky term (primal path)",
    ),
    Mutation(
        "reprior-log-det-missing-dual",
        "samplers/_reprior.py",
        "log_det = d * (0.5 * num_data * jnp.log(kernel_reg) - log_det_n)",
        "log_det = d * (0.5 * num_data * jnp.log(kernel_reg))",
        (f"{REPRIOR}::test_log_det_matches_slogdet_of_jacfwd",),
        "repriorisation log-det Jacobian misses the Cholesky term (dual path)",
    ),
    Mutation(
        "marginal-likelihood-vjp-factor",
        "samplers/_reprior.py",
        "grad_t = alpha @ (alpha.T @ features) - d * k_inv_t",
        "grad_t = alpha @ (alpha.T @ features) - k_inv_t",
        (f"{REPRIOR}::test_closed_form_gradient_matches_autodiff_of_reference_form",),
        "analytic VJP of the feature marginal likelihood without the factor d "
        "(number of outputs) on the log-det term",
    ),
    Mutation(
        "log-det-times-outputs",
        "widebnn/_linalg.py",
        "jnp.sum(white**2) + m * log_det(chol) + n * m * jnp.log(2 * jnp.pi)",
        "jnp.sum(white**2) + log_det(chol) + n * m * jnp.log(2 * jnp.pi)",
        (
            "tests/widebnn/test_linalg.py::"
            "test_solves_and_gaussian_log_likelihood_match_scipy",
        ),
        "Gaussian log-likelihood of m columns counts the log-det once",
    ),
    Mutation(
        "posterior-mean-half-solve",
        "widebnn/gp.py",
        "self._alpha = _linalg.cho_solve(chol, y_train)",
        "self._alpha = _linalg.half_solve(chol, y_train)",
        (f"{GP}::test_posterior_with_callable_kernel_matches_sklearn_rbf",),
        "GP posterior mean with L^{-1} y instead of (L L^T)^{-1} y",
    ),
    Mutation(
        "sketch-fold-without-permutation",
        "kernels/_sketch.py",
        "        x = x[..., jax.random.permutation(permutation_key, d)]",
        "        pass",
        (
            "tests/kernels/test_features_activations.py"
            "::test_srht_folding_separates_aligned_coordinates",
        ),
        "SRHT folds a wide input into one Hadamard size without permuting it: "
        "aligned columns of the chunks collide on one row, an error that does "
        "not fall with dim",
    ),
    Mutation(
        "conv-offsets-without-permutation",
        "kernels/_conv.py",
        "return srht(sketch_key, shifted[..., columns], dim)",
        "return srht(sketch_key, shifted, dim)",
        (
            "tests/kernels/test_features_conv.py"
            "::test_aligned_columns_of_the_offsets_do_not_collide",
        ),
        "conv features sketched offset by offset without permuting each offset's "
        "columns: the mean columns of every offset meet the same Hadamard column",
    ),
)
