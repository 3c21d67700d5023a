"""Scores against hand-computed values (scikit-learn's definitions) and the torch oracle's formulation."""

import numpy as np
import pytest

from rledit_jax.general import metrics
from tests.oracle import torch_general as oracle

LABELS = [1, 0, 1, 1, 0]
ANSWERS = [1, -1, 0, 1, 0]  # one invalid, one wrong


def test_weighted_f1_by_hand():
    # class 0: tp 1, fp 1, fn 1 -> 0.5 (support 2); class 1: tp 2, fn 1 -> 0.8 (support 3); -1: no support
    assert metrics.weighted_f1(LABELS, ANSWERS) == pytest.approx((2 * 0.5 + 3 * 0.8) / 5, abs=1e-15)
    # four classes, 2 and 3 swapped: F1 1, 1, 0, 0
    assert metrics.weighted_f1([0, 1, 2, 3], [0, 1, 3, 2]) == pytest.approx(0.5, abs=1e-15)
    assert metrics.weighted_f1([1, 0], [-1, -1]) == 0.0


def test_mcc_by_hand():
    # true counts (-1, 0, 1) = (0, 2, 3), predicted (1, 2, 2), 3 right of 5:
    # (3*5 - 10) / sqrt((25 - 13) * (25 - 9)) = 5 / sqrt(192)
    assert metrics.mcc(LABELS, ANSWERS) == pytest.approx(5 / np.sqrt(192), abs=1e-15)
    assert metrics.mcc([0, 1, 2, 3], [0, 1, 3, 2]) == pytest.approx(1 / 3, abs=1e-15)
    assert metrics.mcc([0, 1, 1], [0, 1, 1]) == 1.0
    assert metrics.mcc([0, 1, 1], [1, 0, 0]) == pytest.approx(-1.0, abs=1e-15)
    assert metrics.mcc([1, 0], [-1, -1]) == 0.0  # every answer invalid: undefined, 0


def test_task_scores_by_hand():
    scores = metrics.task_scores(LABELS, ANSWERS, [1, 0, 0, 1, 1])
    assert scores == {
        "correct": 3,
        "incorrect": 1,
        "invalid": 1,
        "total": 5,
        "accuracy": 0.6,
        "f1": pytest.approx(0.68, abs=1e-15),
        "mcc": pytest.approx(5 / np.sqrt(192), abs=1e-15),
        "correct_new": 3,
        "incorrect_new": 2,
        "f1_new": pytest.approx((2 * 0.5 + 3 * (2 / 3)) / 5, abs=1e-15),  # class 0: 0.5; class 1: 2/3
    }


@pytest.mark.parametrize("n_classes, seed", [(2, 0), (2, 1), (4, 2), (4, 3)])
def test_task_scores_match_the_oracle_on_random_answers(n_classes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, 40).tolist()
    answers = rng.integers(-1, n_classes, 40).tolist()
    prob_answers = rng.integers(-1 if n_classes == 4 else 0, n_classes, 40).tolist()
    ours = metrics.task_scores(labels, answers, prob_answers)
    assert ours == pytest.approx(oracle.scores(labels, answers, prob_answers), abs=1e-12)
