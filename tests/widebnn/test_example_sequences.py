"""Smoke test of ``examples/sequence_classification.py`` on tiny settings.

The data generator is checked against the task's definition (recomputed here from
the token vectors), and ``main`` runs end to end. The full-size numbers are in the
script's docstring.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from _examples import load_example


@pytest.fixture(scope="module")
def example():
    return load_example("sequence_classification")


def test_sequences_follow_the_task_definition(example):
    tokens, mask, labels = example.make_sequences(
        60, min_length=5, max_length=12, seed=3
    )
    table = example.token_embeddings(example.N_FILLERS)
    assert tokens.shape == (60, 12, table.shape[1]) and mask.shape == (60, 12)
    assert labels.sum() == 30
    for seq, pad, label in zip(tokens, mask, labels, strict=True):
        length = int(np.sum(~pad))
        assert 5 <= length <= 12
        assert np.all(~pad[:length]) and np.all(pad[length:])
        assert np.all(seq[length:] == 0)
        # decode each position to the token whose vector it is
        ids = np.argmin(
            np.linalg.norm(seq[:length, None] - table[None], axis=-1), axis=1
        )
        np.testing.assert_array_equal(seq[:length], table[ids])
        where_a = np.flatnonzero(ids == example.TOKEN_A)
        where_b = np.flatnonzero(ids == example.TOKEN_B)
        assert len(where_a) == 1 and len(where_b) == 1
        assert label == (abs(int(where_a[0]) - int(where_b[0])) == 1)


@pytest.mark.slow
def test_main_runs_and_attention_separates_tiny_task(example):
    result = example.main(
        n_train=32, n_test=32, min_length=5, max_length=8, tile=64, progress=False
    )
    names = ("attention", "attention, no positions", "pooling")
    assert set(result) == {*names, "seconds"}
    for name in names:
        assert result[name]["relative_noise"] in example.NOISE_GRID
    # Attention with positions solves the task (1.0 at full size, see the script);
    # 32 test sequences: a classifier at chance reaches 0.9 with probability 1.3e-6.
    assert result["attention"]["nngp_accuracy"] >= 0.9, result
    assert result["attention"]["ntk_accuracy"] >= 0.9, result
    # Without positions (permutation-invariant) and without attention the networks
    # see only the bag of tokens, distributed alike in both classes by construction:
    # their predictions are independent of the labels, so the number correct is
    # Binomial(32, 1/2) (or less spread: the test labels are balanced). Two-sided
    # interval for a false-alarm rate of 1e-3 over the four accuracies.
    n_test, alpha = 32, 1e-3 / 4
    low = scipy.stats.binom.ppf(alpha / 2, n_test, 0.5) / n_test
    high = scipy.stats.binom.isf(alpha / 2, n_test, 0.5) / n_test
    for name in ("attention, no positions", "pooling"):
        for which in ("nngp_accuracy", "ntk_accuracy"):
            assert low <= result[name][which] <= high, (name, which, result)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=1), "n must"),
        (dict(n=10, min_length=3), "min_length"),
        (dict(n=10, min_length=9, max_length=8), "min_length"),
        (dict(n=10, n_fillers=0), "n_fillers"),
    ],
)
def test_bad_sizes(example, kwargs, match):
    with pytest.raises(ValueError, match=match):
        example.make_sequences(**kwargs)
