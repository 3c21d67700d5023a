"""Checkpoints of `bin/train`: a run killed and resumed ends bitwise where an uninterrupted one does."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import safetensors.numpy

from rledit_jax import checkpoint, data, run
from rledit_jax.cli.train import train_and_evaluate
from rledit_jax.method import train_step
from tests.cli.test_train import tiny_config

pytestmark = pytest.mark.slow

N_SEQUENCES, STEPS = 3, 3  # tiny_config: train.steps_per_sequence = 3 steps of data.n_edits = 5 facts


@pytest.fixture(scope="module")
def stream_file(tmp_path_factory):
    """3 training sequences over rows 0..14: rows every n_epochs >= 1 gives the same facts, so a run
    with fewer epochs trains its sequences on exactly the data of a longer one."""
    path = tmp_path_factory.mktemp("stream") / "stream.json"
    train = sum((data.draw_stream(15, STEPS, 5, seed) for seed in range(N_SEQUENCES)), [])
    path.write_text(json.dumps({"train": train, "eval": data.draw_stream(10, 2, 5, 99)}))
    return str(path)


def config(stream_file, **overrides):
    return tiny_config(**{"data.stream_file": stream_file, "train.sequences": N_SEQUENCES, **overrides})


@pytest.fixture(scope="module")
def uninterrupted(stream_file, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    train_and_evaluate(config(stream_file), str(workdir))
    return workdir


def assert_same_run(workdir, reference):
    hypernet = safetensors.numpy.load_file(workdir / "hypernet.safetensors")
    expected = safetensors.numpy.load_file(reference / "hypernet.safetensors")
    assert hypernet.keys() == expected.keys()
    for name, tensor in expected.items():
        assert hypernet[name].dtype == tensor.dtype and hypernet[name].tobytes() == tensor.tobytes(), name
    metrics, expected_metrics = (json.loads((d / "metrics.json").read_text()) for d in (workdir, reference))
    assert {k: metrics[k] for k in ("ES", "GS", "LS")} == {k: expected_metrics[k] for k in ("ES", "GS", "LS")}
    lines = (workdir / "train_metrics.jsonl").read_text().splitlines()
    assert len(lines) == N_SEQUENCES * STEPS
    assert lines == (reference / "train_metrics.jsonl").read_text().splitlines()


def test_extending_n_epochs_resumes_exactly(stream_file, uninterrupted, tmp_path):
    train_and_evaluate(config(stream_file, **{"train.sequences": 1}), str(tmp_path))
    assert (
        checkpoint.Checkpointer(
            str(tmp_path / "checkpoints"), every=1, keep=2, config={}, digests=[], padded_lengths={}
        ).latest()
        == 1
    )
    train_and_evaluate(config(stream_file), str(tmp_path))
    assert_same_run(tmp_path, uninterrupted)


class Killed(Exception):
    pass


@pytest.mark.parametrize("when", ["during_sequence", "before_checkpoint"])
def test_killed_run_resumes_exactly(stream_file, uninterrupted, tmp_path, monkeypatch, when):
    """Killed in sequence 2's program (checkpoint 2 holds sequences 0-1), or after sequence 1's
    metrics lines were written but before its checkpoint (checkpoint 1; those lines are written again)."""
    if when == "during_sequence":
        calls, program = [], train_step.train_sequence_and_update

        def dies_in_third(*args):
            calls.append(1)
            if len(calls) == 3:
                raise Killed
            return program(*args)

        monkeypatch.setattr(train_step, "train_sequence_and_update", dies_in_third)
    else:
        save = checkpoint.Checkpointer.save
        monkeypatch.setattr(
            checkpoint.Checkpointer,
            "save",
            lambda self, step, *a, **k: save(self, step, *a, **k) if step < 2 else (_ for _ in ()).throw(Killed()),
        )
    with pytest.raises(Killed):
        train_and_evaluate(config(stream_file), str(tmp_path))
    monkeypatch.undo()
    done = 2 if when == "during_sequence" else 1
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved == [str(s) for s in range(1, done + 1)]
    lines = (tmp_path / "train_metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 * STEPS  # "before_checkpoint": sequence 1's lines are ahead of the checkpoint
    # A save cut short leaves orbax's temporary directory; it is never taken for a checkpoint.
    partial = tmp_path / "checkpoints" / f"3{ocp.path.atomicity_types.TMP_DIR_SUFFIX}-1234"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "garbage").write_text("not a checkpoint")
    train_and_evaluate(config(stream_file), str(tmp_path))
    assert_same_run(tmp_path, uninterrupted)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("synthetic")
    train_and_evaluate(tiny_config(**{"train.sequences": 1}), str(workdir))
    return workdir


def test_other_config_stops_naming_the_fields(synthetic_run):
    before = (synthetic_run / "config.json").read_text()
    other = tiny_config(
        **{"train.sequences": 1, "hparams.rank": 16, "model.edit_sites": ["transformer.h.3.mlp.fc_out"]}
    )
    with pytest.raises(ValueError, match="different config") as error:
        train_and_evaluate(other, str(synthetic_run))
    message = str(error.value)
    assert "hparams.rank: 32 -> 16" in message and "model.edit_sites: [" in message
    assert "train.sequences" not in message.split("\n")[1]
    assert (synthetic_run / "config.json").read_text() == before  # nothing written for the refused run


def test_other_data_stops(synthetic_run):
    # Synthetic facts: the train/eval split depends on n_epochs, so sequence 0 would edit other facts.
    with pytest.raises(ValueError, match=r"training sequences \[0\] of this config edit other facts"):
        train_and_evaluate(tiny_config(**{"train.sequences": 2}), str(synthetic_run))


def test_checkpoint_holds_no_llm_params(synthetic_run):
    step_dir = synthetic_run / "checkpoints" / "1"
    meta = json.loads((step_dir / "meta" / "metadata").read_text())
    assert meta["sequences_done"] == 1 and meta["config"]["hparams"]["rank"] == 32
    assert len(meta["data"]["sequence_digests"]) == 1
    stored = ocp.StandardCheckpointer().metadata(step_dir / "state").item_metadata.tree
    assert set(stored) == {"nets", "opt_state", "norms"}
    leaves = jax.tree.leaves(stored)
    assert not any("transformer" in leaf.name for leaf in leaves)
    nets = [leaf for leaf in leaves if leaf.name.startswith("nets.")]
    nbytes = lambda ls: sum(int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize for leaf in ls)
    # Adam's two moments mirror the nets; the rest is normaliser statistics and Adam's count.
    assert nbytes(leaves) - 3 * nbytes(nets) < 4096
    _, llm_params = run.load_model(tiny_config().model)
    on_disk = sum(f.stat().st_size for f in step_dir.rglob("*") if f.is_file())
    assert on_disk < sum(x.nbytes for x in jax.tree.leaves(llm_params))


def test_restore_checks_shapes_and_dtypes(tmp_path):
    state = {"nets": {(4, 2): {"w": jnp.arange(6.0).reshape(2, 3)}}, "count": jnp.array(3, jnp.int32)}
    make = lambda: checkpoint.Checkpointer(
        str(tmp_path), every=2, keep=1, config={"a": 1}, digests=["d"] * 4, padded_lengths={}
    )
    with make() as ckpt:
        assert not ckpt.save(1, state)  # not a multiple of every
        assert ckpt.save(1, state, final=True)
    with make() as ckpt:
        step, restored = ckpt.restore(jax.tree.map(jnp.zeros_like, state))
    assert step == 1 and jax.tree.structure(restored) == jax.tree.structure(state)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)))
    wrong_dtype = {**state, "count": jnp.zeros((), jnp.float32)}
    wrong_shape = {**state, "nets": {(4, 2): {"w": jnp.zeros((3, 2))}}}
    for wrong, what in (
        (wrong_dtype, r"count: stored \(\(\), 'int32'\), expected \(\(\), 'float32'\)"),
        (wrong_shape, r"nets.\(4, 2\).w: stored \(\(2, 3\)"),
    ):
        with make() as ckpt, pytest.raises(ValueError, match=what):
            ckpt.restore(wrong)
