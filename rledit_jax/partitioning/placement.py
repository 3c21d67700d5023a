"""Putting host values onto a mesh: every process contributes the shards its devices hold.

`place(tree, shardings)` builds each global array with `jax.make_array_from_callback`, so on several
hosts every process passes the same host value and keeps only its own shards, and a whole value is
never copied to every device before being split.
"""

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def replicated(mesh, tree):
    """A whole copy on every device of `mesh`, for every leaf of `tree`."""
    return jax.tree.map(lambda _: NamedSharding(mesh, P()), tree)


def place_array(value, sharding) -> jax.Array:
    """One host (or single-device) value as a global array with `sharding`."""
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def place(tree, shardings):
    """`tree`'s leaves as global arrays, each with the sharding at its place in `shardings`."""
    return jax.tree.map(place_array, tree, shardings)
