"""A task's scores from its gold labels and answers (ints; -1 an invalid answer), as the reference.

The reference scores with scikit-learn; these are the same definitions in numpy: the classes are
every value among the labels and answers (so -1 is a class of its own that has no support),
`f1_score(average="weighted")` is the support-weighted mean of each class's F1 (0 where a class is
never right), `matthews_corrcoef` is the multiclass correlation (0 where it is undefined).
"""

import numpy as np


def accuracy(labels, answers) -> float:
    return float(np.mean(np.asarray(labels) == np.asarray(answers)))


def weighted_f1(labels, answers) -> float:
    labels, answers = np.asarray(labels), np.asarray(answers)
    f1s, supports = [], []
    for c in np.union1d(labels, answers):
        true, pred = labels == c, answers == c
        tp, wrong = np.sum(true & pred), np.sum(true ^ pred)  # wrong = false positives + false negatives
        f1s.append(2 * tp / (2 * tp + wrong) if tp else 0.0)
        supports.append(np.sum(true))
    return float(np.dot(f1s, supports) / np.sum(supports))


def mcc(labels, answers) -> float:
    labels, answers = np.asarray(labels), np.asarray(answers)
    classes = np.union1d(labels, answers)
    true = np.array([np.sum(labels == c) for c in classes], np.float64)
    pred = np.array([np.sum(answers == c) for c in classes], np.float64)
    n, right = float(len(labels)), float(np.sum(labels == answers))
    cov_tp = right * n - true @ pred
    cov_pp, cov_tt = n * n - pred @ pred, n * n - true @ true
    return float(cov_tp / np.sqrt(cov_tt * cov_pp)) if cov_pp * cov_tt else 0.0


def task_scores(labels, answers, prob_answers) -> dict:
    """The reference's result dict (less its timing) plus `accuracy`; `*_new`: probability-based answers."""
    labels, answers, prob_answers = (np.asarray(x) for x in (labels, answers, prob_answers))
    valid = answers != -1
    return {
        "correct": int(np.sum(valid & (answers == labels))),
        "incorrect": int(np.sum(valid & (answers != labels))),
        "invalid": int(np.sum(~valid)),
        "total": len(labels),
        "accuracy": accuracy(labels, answers),
        "f1": weighted_f1(labels, answers),
        "mcc": mcc(labels, answers),
        "correct_new": int(np.sum(prob_answers == labels)),
        "incorrect_new": int(np.sum(prob_answers != labels)),
        "f1_new": weighted_f1(labels, prob_answers),
    }
