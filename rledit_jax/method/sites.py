"""Which sites are edited and how they group into hypernetworks (one per kernel shape).

A `SiteLayout` is static (hashable): it is a jit static argument and decides the program's structure.
Groups are keyed by the kernel shape `(d_in, d_out)`; within a group, sites keep config order and a
site's position there is its `index` into the hypernetwork's per-site tables (DESIGN.md section 3).
"""

import dataclasses

from rledit_jax import models

Shape = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Site:
    name: str
    shape: Shape
    index: int  # Position within its shape group.


@dataclasses.dataclass(frozen=True)
class SiteLayout:
    sites: tuple[Site, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sites)

    @property
    def groups(self) -> dict[Shape, tuple[str, ...]]:
        groups: dict[Shape, list[str]] = {}
        for s in self.sites:
            groups.setdefault(s.shape, []).append(s.name)
        return {shape: tuple(names) for shape, names in groups.items()}


def check_hypernets(layout: SiteLayout, hypernets, source: str = "hypernetwork") -> None:
    """Raises ValueError unless `hypernets` (a `spec.Hypernets`) holds one network and normaliser per
    shape group of `layout`, with one per-site row per site of the group."""
    nets, norms = hypernets.nets, hypernets.norms
    expected = {shape: len(names) for shape, names in layout.groups.items()}
    found = {tuple(int(d) for d in shape): int(net["lr"].shape[0]) for shape, net in nets.items()}
    if found != expected or set(norms) != set(nets):
        raise ValueError(
            f"{source} holds hypernetworks for (kernel shape (d_in, d_out): n_sites) {found}, but the "
            f"edit sites {list(layout.names)} need {expected}"
        )


def make_layout(llm_config, edit_sites) -> SiteLayout:
    """The layout of `edit_sites` (HF linear names) in the model of `llm_config`."""
    if not edit_sites:
        raise ValueError("no edit sites: name at least one linear to edit")
    if len(set(edit_sites)) != len(edit_sites):
        raise ValueError(f"an edit site is named twice: {list(edit_sites)}")
    shapes = models.site_shapes(llm_config)
    counts: dict[Shape, int] = {}
    sites = []
    for name in edit_sites:
        models.site_path(llm_config, name)  # Unknown names fail here, listing the valid ones.
        if llm_config.site_layer(name) >= llm_config.n_layers:
            raise ValueError(f"{name!r} cannot be edited: the method applies the LM head at answer positions only")
        shape = shapes[name]
        sites.append(Site(name, shape, counts.get(shape, 0)))
        counts[shape] = counts.get(shape, 0) + 1
    return SiteLayout(tuple(sites))
