"""Causal LMs as pure functions over params pytrees, and their HF interop.

`params` is the nested dict described in `layers.py` / the architecture module (`gptj.py`,
`llamalike.py`: HF names, kernels `[d_in, d_out]`). `config` is the architecture's frozen config
dataclass, which satisfies the model contract (`contract.ModelConfig`): it is the static argument
of jitted functions. Inputs are `input_ids` `[B, T]` with an `attention_mask` `[B, T]` (right-padded
rows) or `layers.Segments` (sequences packed into rows: each token's sequence id and position);
logits are `[B, T, vocab]` float32; hidden states entering block `layer` are `[B, T, d_model]` in
the model's dtype.
"""

import re

import jax.numpy as jnp

from rledit_jax.jit import program
from rledit_jax.models import layers, registry
from rledit_jax.models.contract import ModelConfig
from rledit_jax.models.gptj import GPTJConfig
from rledit_jax.models.hf_io import config_from_hf, load_hf, read_hf_config, save_hf
from rledit_jax.models.llamalike import LlamaLikeConfig

__all__ = [
    "GPTJConfig",
    "LlamaLikeConfig",
    "ModelConfig",
    "config_from_hf",
    "load_hf",
    "save_hf",
    "read_hf_config",
    "forward",
    "forward_layers",
    "forward_with_probes",
    "init_params",
    "site_shapes",
    "site_path",
    "get_site",
    "set_sites",
]


def _module(config):
    return registry.architecture(config.model_type).module(config)


def _check_length(config, x, attention_mask) -> None:
    """Right-padded rows must fit the model's positions (packed rows' sequences are checked when built)."""
    if not isinstance(attention_mask, layers.Segments) and x.shape[1] > config.max_length:
        raise ValueError(f"sequence length {x.shape[1]} exceeds the model's {config.max_length} positions")


@program
def forward(config, params, input_ids, attention_mask):
    """Logits `[B, T, V]` (float32) for `input_ids`, `attention_mask` `[B, T]`."""
    return forward_layers(config, params, input_ids, attention_mask)


def _segments(attention_mask) -> layers.Segments | None:
    if attention_mask is None or isinstance(attention_mask, layers.Segments):
        return attention_mask
    return layers.Segments.of_mask(attention_mask)


def forward_layers(config, params, x, attention_mask, *, start: int = 0, stop: int | None = None):
    """Blocks `start .. stop - 1`, then (when `stop` is None) the head (traceable, not jitted).

    `x`: `input_ids` `[B, T]` when `start == 0`, else the hidden states entering block `start`
    (`start == n_layers`: the last block's output, so only the head runs; `attention_mask` is then
    unused and may be None). `attention_mask`: `[B, T]` 0/1, or `layers.Segments`. With `stop` None
    the result is the logits `[B, T, V]` (float32: the final norm, the LM head and any soft-capping),
    else the hidden states entering block `stop` (`stop == n_layers`: the last block's output, before
    the final norm).
    """
    _check_length(config, x, attention_mask)
    return _module(config).apply({"params": params}, x, _segments(attention_mask), start, stop)


def forward_with_probes(config, params, probes, x, attention_mask, *, start: int = 0, stop: int | None = None):
    """`forward_layers(..., start, stop)` adding `probes[site]` (`[B, T, d_out]`) to each site's output.

    Returns `(logits or hidden, keys)` with `keys[site]` the site's input `[B, T, d_in]`. Sites must
    lie in the blocks that run.
    """
    _check_length(config, x, attention_mask)
    probe_tree: dict = {}
    for site, value in probes.items():
        node = probe_tree
        for key in site_path(config, site)[:-1]:
            node = node.setdefault(key, {})
        node["output"] = value
    logits, state = _module(config).apply(
        {"params": params, layers.PROBES: probe_tree}, x, _segments(attention_mask), start, stop, mutable=[layers.KEYS]
    )
    keys = {}
    for site in probes:
        node = state[layers.KEYS]
        for key in site_path(config, site)[:-1]:
            node = node[key]
        keys[site] = node["input"]
    return logits, keys


def init_params(config, rng) -> dict:
    """Random params (normal(0.02) weights, unit norms) for a config, e.g. the tiny default."""
    dummy = jnp.zeros((1, 1), jnp.int32)
    return _module(config).init(rng, dummy, layers.Segments.of_mask(jnp.ones_like(dummy)))["params"]


def site_shapes(config) -> dict[str, tuple[int, int]]:
    """All editable linears by HF module name, with kernel shapes `(d_in, d_out)`."""
    return config.linear_sites()


def site_path(config, site: str) -> tuple[str, ...]:
    """The params path of a site's kernel, e.g. `transformer.h.3.mlp.fc_out` -> (..., "kernel")."""
    valid = config.linear_sites()
    if site not in valid:
        sample = list(valid)
        layer_range = "{0.." + str(config.n_layers - 1) + "}"
        patterns = sorted({re.sub(r"\.\d+\.", f".{layer_range}.", name) for name in sample})
        raise ValueError(
            f"unknown edit site {site!r} of this {config.model_type} model; valid sites are HF linear names "
            f"such as {sample[:6]} ... {sample[-1]!r} ({len(sample)} in all: {', '.join(patterns)})"
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
