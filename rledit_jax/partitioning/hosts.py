"""Several processes (one per host) running one program: `jax.distributed` joins them.

  initialize(coordinator, num_processes, process_id)

`coordinator` "HOST:PORT" of process 0 (every process passes the same one, with its own
`process_id`); "auto" leaves all three to `jax.distributed.initialize`, which reads them from the
cluster (SLURM, Open MPI, Kubernetes, Cloud TPU) or from `JAX_COORDINATOR_ADDRESS`; None is one
process. It must run before anything uses a device. Afterwards `jax.devices()` lists the devices of
every host, the mesh (`mesh.py`) spans them, and each process loads and holds only the shards of its
own devices (`placement.py`, `models.load_hf`).
"""

import os

import jax


def initialize(coordinator: str | None, num_processes: int | None = None, process_id: int | None = None) -> None:
    """Joins this process to the others (see the module docstring); nothing with `coordinator` None."""
    if coordinator is None:
        return
    if coordinator == "auto":
        jax.distributed.initialize()
        return
    if num_processes is None or process_id is None:
        raise ValueError(f"--coordinator={coordinator} needs --num_processes and --process_id")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)


def output_dir(workdir: str) -> str:
    """Where this process writes a run's files: `workdir` for process 0, `workdir/process<i>` for the
    others (their copies of the same numbers). Checkpoints go to `workdir` from every process (orbax
    writes each array once), so `workdir` must be on a filesystem every host shares."""
    index = jax.process_index()
    return workdir if index == 0 else os.path.join(workdir, f"process{index}")
