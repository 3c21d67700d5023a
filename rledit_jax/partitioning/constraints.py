"""Sharding constraints inside the compiled programs, from the mesh of their spec (`Spec.mesh`).

The inputs' shardings (`rules.py` for the LLM, whole arrays for everything else) decide most of the
partitioning; these constraints fix what XLA's propagation would otherwise be free to choose:

  packed_tokens  [1, P, ...]                 a step's packed row (tokens or the hidden states entering
                                             the first edited block) split along `data` on P
  factors        {site: (K [N, d_in], C [N, d_out])}  split like the dims of the site's kernel
  whole          any pytree                  every leaf whole on every device: the hypernetworks, their
                                             normaliser statistics, the optimiser state and gradients

With `spec.mesh` None nothing is constrained; on a one-device mesh the constraints compile away (the
programs are the same as without them).
"""

import jax
from jax.sharding import PartitionSpec as P

from rledit_jax.partitioning import rules


def _constrain(mesh, tree, specs):
    if mesh is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, rules.named(mesh, specs))


def packed_tokens(spec, x):
    """`x` `[1, P, ...]` with its P packed slots split along `data`."""
    return _constrain(spec.mesh, x, P(None, rules.DATA))


def factors(spec, factors):
    """`{site: (K, C)}` (any leading axes before `[N, d]`) with K's d_in and C's d_out split as the kernel's."""

    def specs(site, pair):
        return tuple(P(*[None] * (x.ndim - 1), s[1]) for x, s in zip(pair, rules.factor_specs(spec.model, site)))

    return _constrain(spec.mesh, factors, {site: specs(site, pair) for site, pair in factors.items()})


def whole(spec, tree):
    """`tree` with every leaf whole (replicated) on every device."""
    return _constrain(spec.mesh, tree, jax.tree.map(lambda _: P(), tree))
