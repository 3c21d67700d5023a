"""Running the same compiled programs over a device mesh (`jax.sharding`), on one host or several.

  mesh.py         the `data` x `model` mesh of `config.mesh`
  rules.py        per architecture, the partition spec of every LLM parameter (tensor parallelism)
  placement.py    host values onto the mesh, each process contributing its own shards
  constraints.py  the few sharding constraints inside the programs (`Spec.mesh`)
  hosts.py        several processes (`jax.distributed`)

Only the arrays' shardings and `Spec.mesh` differ between device counts: the programs are the same,
and XLA's SPMD partitioner splits them.
"""
