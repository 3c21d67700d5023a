"""The epoch schedule: with two epochs the reference's `RLEDIT.run` trains, evaluates, trains, evaluates,
and its normaliser keeps every update, evaluations included (see harness.py; `two_epochs` is the
`single_site` set-up with `n_epochs=2`). Ours (train.schedule="evaluate_each_sequence", the default)
must give the same shifts in the second evaluation and both evaluations' ES / GS / LS."""

import pytest

from tests import margins
from tests.reference import refkit
from tests.reference.harness import SITE

pytestmark = [pytest.mark.reference, pytest.mark.filterwarnings("ignore:Full backward hook is firing")]


def test_every_epoch_is_evaluated(two_epochs):
    _, theirs, mine = two_epochs
    logged = [d for d in theirs["logged"] if "ES" in d]
    evaluations = mine["metrics"]["evaluations"]
    assert [e["after_sequences"] for e in evaluations] == [1, 2] and len(logged) == 2
    for epoch, (ours, scores) in enumerate(zip(evaluations, logged)):
        for name in ("ES", "GS", "LS"):
            print(
                f"reference two epochs, evaluation {epoch} {name}: ours {ours[name]:.4f}, reference {scores[name]:.4f}"
            )
            margins.check(f"two epochs, evaluation {epoch} {name}", abs(ours[name] - scores[name]), 1e-6)
    assert all(mine["metrics"][k] == evaluations[-1][k] for k in ("ES", "GS", "LS"))


def test_second_evaluation_shifts(two_epochs):
    setup, theirs, mine = two_epochs
    t_all = setup.num_seq
    assert len(theirs["shifts"]) == 4 * t_all  # train, eval, train, eval
    for t in range(t_all):
        # Through two trainings and the first evaluation's normaliser updates: 1e-4 as test_every_shift.
        refkit.check(
            f"two epochs eval step {t} shift",
            mine["trace"][f"eval/step{t}/{SITE}/shift"],
            theirs["shifts"][3 * t_all + t][SITE],
            1e-4,
        )
