"""Reference tier set-up: every test here needs RLEDIT_REF_DIR (a checkout of zhrli324/RLEdit).

Without it, every test of this directory is skipped at collection (nothing is imported), so the plain
`make test` / `python -m pytest -q` runs pass through quickly. With it, the session fixture `ref` holds
the reference's modules (see refkit.import_reference).
"""

from pathlib import Path

import pytest

from tests.reference import harness, refkit

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    if refkit.reference_dir() is not None:
        return
    skip = pytest.mark.skip(reason=refkit.skip_reason())
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ref():
    path = refkit.reference_dir()
    if path is None:
        pytest.skip(refkit.skip_reason())
    return refkit.import_reference(path)


@pytest.fixture
def wandb_log(ref):
    """The dicts the reference passes to `wandb.log` during one test."""
    ref.wandb.logged.clear()
    return ref.wandb.logged


@pytest.fixture(scope="session")
def tiny_model(ref, tmp_path_factory):
    """A tiny random float32 HF GPT-J directory over the GPT-2 vocabulary (refkit.make_tiny_gptj)."""
    return refkit.make_tiny_gptj(tmp_path_factory.mktemp("tiny_gptj"))


@pytest.fixture(scope="session")
def favoured_model(ref, tmp_path_factory):
    """The tiny GPT-J whose lm_head favours the evaluation rows' common answer tokens (harness.favoured_model)."""
    return harness.favoured_model(ref, tmp_path_factory.mktemp("favoured_gptj"))


@pytest.fixture(scope="session")
def single_site(ref, favoured_model, tmp_path_factory):
    """`(setup, reference record, ours)`: the end-to-end runs of harness.zsre_setup on `harness.SITE`."""
    return harness.both_runs(ref, favoured_model, tmp_path_factory.mktemp("single_site"), [harness.SITE])


@pytest.fixture(scope="session")
def two_epochs(ref, favoured_model, tmp_path_factory):
    """The end-to-end runs of `single_site` with two epochs (train, evaluate, train, evaluate)."""
    return harness.both_runs(ref, favoured_model, tmp_path_factory.mktemp("two_epochs"), [harness.SITE], n_epochs=2)
