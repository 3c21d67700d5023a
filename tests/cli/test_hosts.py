"""`bin/train --coordinator` on two processes of 2 CPU devices each (a 2 x 2 mesh over both) trains
the hypernetwork the one-device run trains, to 1e-5 relative; process 1 writes its copy of the files."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy

from rledit_jax.cli.train import train_and_evaluate
from rledit_jax.partitioning import hosts
from tests import margins
from tests.config_files import load_config, with_fields
from tests.paths import ROOT

FIELDS = {"train.sequences": 1, "train.steps_per_sequence": 2, "eval.steps": 2, "data.n_edits": 4, "hparams.rank": 8}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def two_processes(workdir):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    common = [
        sys.executable,
        str(ROOT / "bin" / "train"),
        f"--config={ROOT / 'configs' / 'tiny.py'}",
        f"--workdir={workdir}",
        "--config.mesh.data=2",
        "--config.mesh.model=2",
        f"--coordinator=localhost:{free_port()}",
        "--num_processes=2",
        *(f"--config.{k}={v}" for k, v in FIELDS.items()),
    ]
    procs = [
        subprocess.Popen([*common, f"--process_id={i}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(2)
    ]
    return [p.communicate(timeout=600) + (p.returncode,) for p in procs]


@pytest.mark.slow
def test_two_processes_train_as_one_device(tmp_path):
    for _, stderr, code in two_processes(tmp_path / "hosts"):
        assert code == 0, stderr.decode()[-3000:]
    train_and_evaluate(with_fields(load_config("tiny"), **FIELDS), str(tmp_path / "one"))
    ours, reference = (safetensors.numpy.load_file(tmp_path / d / "hypernet.safetensors") for d in ("hosts", "one"))
    assert ours.keys() == reference.keys()
    diff = sum(np.sum((ours[k].astype(np.float64) - reference[k]) ** 2) for k in reference)
    margins.check(
        "two hosts vs one device",
        np.sqrt(diff / sum(np.sum(reference[k].astype(np.float64) ** 2) for k in reference)),
        1e-5,
    )
    losses = [
        [json.loads(line)["loss"] for line in (tmp_path / d).read_text().splitlines()]
        for d in ("hosts/train_metrics.jsonl", "hosts/process1/train_metrics.jsonl", "one/train_metrics.jsonl")
    ]
    np.testing.assert_allclose(losses[0], losses[2], rtol=1e-5)
    assert losses[0] == losses[1]


def test_coordinator_needs_the_process_count_and_id():
    with pytest.raises(ValueError, match="--coordinator=h:1 needs --num_processes and --process_id"):
        hosts.initialize("h:1", num_processes=2)
