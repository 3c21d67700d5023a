"""Causal LMs as pure functions over params pytrees, and their HF interop.

`params` is the nested dict described in `layers.py` / the architecture module (HF names, kernels
`[d_in, d_out]`). `config` is the architecture's frozen config dataclass (hashable, so it is a static
argument of jitted functions).
"""

import functools

import jax
import jax.numpy as jnp

from rledit_jax.models import layers, registry
from rledit_jax.models.gptj import GPTJConfig
from rledit_jax.models.hf_io import load_hf, read_hf_config, save_hf

__all__ = [
    "GPTJConfig",
    "load_hf",
    "save_hf",
    "read_hf_config",
    "forward",
    "forward_with_probes",
    "init_params",
    "site_shapes",
    "site_path",
    "get_site",
    "set_sites",
]


def _module(config):
    return registry.architecture(config.model_type).module(config)


def _check_length(config, input_ids) -> None:
    if input_ids.shape[-1] > config.n_positions:
        raise ValueError(f"sequence length {input_ids.shape[-1]} exceeds the model's n_positions={config.n_positions}")


@functools.partial(jax.jit, static_argnums=0)
def forward(config, params, input_ids, attention_mask):
    """Logits `[B, T, V]` (float32) for `input_ids`, `attention_mask` `[B, T]`."""
    _check_length(config, input_ids)
    return _module(config).apply({"params": params}, input_ids, attention_mask)


def forward_with_probes(config, params, probes, input_ids, attention_mask):
    """Forward that adds `probes[site]` (`[B, T, d_out]`) to each site's output.

    Returns `(logits, keys)` with `keys[site]` the site's input `[B, T, d_in]`.
    """
    _check_length(config, input_ids)
    probe_tree: dict = {}
    for site, value in probes.items():
        node = probe_tree
        for key in site_path(config, site)[:-1]:
            node = node.setdefault(key, {})
        node["output"] = value
    logits, state = _module(config).apply(
        {"params": params, layers.PROBES: probe_tree}, input_ids, attention_mask, mutable=[layers.KEYS]
    )
    keys = {}
    for site in probes:
        node = state[layers.KEYS]
        for key in site_path(config, site)[:-1]:
            node = node[key]
        keys[site] = node["input"]
    return logits, keys


def init_params(config, rng) -> dict:
    """Random params (normal(0.02) weights, unit LayerNorms) for a config, e.g. the tiny default."""
    dummy = jnp.zeros((1, 1), jnp.int32)
    return _module(config).init(rng, dummy, jnp.ones_like(dummy))["params"]


def site_shapes(config) -> dict[str, tuple[int, int]]:
    """All editable linears by HF module name, with kernel shapes `(d_in, d_out)`."""
    return config.linear_sites()


def site_path(config, site: str) -> tuple[str, ...]:
    """The params path of a site's kernel, e.g. `transformer.h.3.mlp.fc_out` -> (..., "kernel")."""
    valid = config.linear_sites()
    if site not in valid:
        sample = list(valid)
        raise ValueError(
            f"unknown edit site {site!r}; valid sites are HF linear names such as "
            f"{sample[:6]} ... {sample[-1]!r} ({len(sample)} in all: "
            "transformer.h.{0.." + str(config.n_layer - 1) + "}.{attn.q_proj,attn.k_proj,"
            "attn.v_proj,attn.out_proj,mlp.fc_in,mlp.fc_out}, lm_head)"
        )
    return tuple(site.split(".")) + ("kernel",)


def get_site(config, params, site: str):
    """A site's kernel `[d_in, d_out]`."""
    node = params
    for key in site_path(config, site):
        node = node[key]
    return node


def set_sites(config, params, kernels: dict) -> dict:
    """A copy of `params` with the named sites' kernels replaced (other leaves shared, not copied)."""

    def replace(node, path, value):
        if not path:
            return value
        return {**node, path[0]: replace(node[path[0]], path[1:], value)}

    for site, kernel in kernels.items():
        params = replace(params, site_path(config, site), kernel)
    return params
