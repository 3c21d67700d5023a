"""Partition rules: which mesh axis splits which dimension of every LLM parameter (tensor parallelism).

The rule is Megatron-style tensor parallelism along the mesh axis `model` (`mesh.py`). With every
kernel `[d_in, d_out]` (our layout, `models/layers.py`):

  column-parallel  [d_in, d_out / model]   q/k/v projections, GPT-J fc_in, gate/up projections, lm_head
  row-parallel     [d_in / model, d_out]   attention output projections, GPT-J fc_out, down_proj
  vocab-parallel   [vocab / model, d]      the embedding table (also the tied head of Gemma-2)

Biases follow their kernel's output (split with column kernels, whole with row kernels); norms are
whole. So attention heads and the MLP's inner width are split and the residual stream `[.., d]` is
whole on every device; XLA inserts one reduction per row-parallel kernel. The `data` axis holds no
parameter: it splits a step's packed tokens (`constraints.py`).

Rules are tables of `(regex over the dotted params path, PartitionSpec)`, the first full match wins;
a parameter no rule matches is an error (a new parameter needs a rule, never a silent default).
"""

import re

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from rledit_jax import models

DATA, MODEL = "data", "model"
COLUMN = P(None, MODEL)
ROW = P(MODEL, None)
WHOLE = P()

_GPTJ_LAYER = r"transformer\.h\.\d+\."
_LLAMA_LAYER = r"model\.layers\.\d+\."
GPTJ_RULES = (
    (r"transformer\.wte\.embedding", ROW),
    (_GPTJ_LAYER + r"ln_1\.(scale|bias)", WHOLE),
    (_GPTJ_LAYER + r"attn\.(q|k|v)_proj\.kernel", COLUMN),
    (_GPTJ_LAYER + r"attn\.out_proj\.kernel", ROW),
    (_GPTJ_LAYER + r"mlp\.fc_in\.kernel", COLUMN),
    (_GPTJ_LAYER + r"mlp\.fc_in\.bias", P(MODEL)),
    (_GPTJ_LAYER + r"mlp\.fc_out\.kernel", ROW),
    (_GPTJ_LAYER + r"mlp\.fc_out\.bias", WHOLE),
    (r"transformer\.ln_f\.(scale|bias)", WHOLE),
    (r"lm_head\.kernel", COLUMN),
    (r"lm_head\.bias", P(MODEL)),
)
LLAMALIKE_RULES = (
    (r"model\.embed_tokens\.embedding", ROW),
    (_LLAMA_LAYER + r"self_attn\.(q|k|v)_proj\.kernel", COLUMN),
    (_LLAMA_LAYER + r"self_attn\.(q|k|v)_proj\.bias", P(MODEL)),
    (_LLAMA_LAYER + r"self_attn\.o_proj\.kernel", ROW),
    (_LLAMA_LAYER + r"mlp\.(gate|up)_proj\.kernel", COLUMN),
    (_LLAMA_LAYER + r"mlp\.down_proj\.kernel", ROW),
    (_LLAMA_LAYER + r"\w+layernorm\.scale", WHOLE),
    (r"model\.norm\.scale", WHOLE),
    (r"lm_head\.kernel", COLUMN),
)
RULES = {
    "gptj": GPTJ_RULES,
    "llama": LLAMALIKE_RULES,
    "mistral": LLAMALIKE_RULES,
    "gemma2": LLAMALIKE_RULES,
    "qwen2": LLAMALIKE_RULES,
}


def _dotted(path) -> str:
    return ".".join(str(getattr(k, "key", k)) for k in path)


def partition_spec(model_type: str, name: str) -> P:
    """The spec of the parameter at dotted path `name` (e.g. `model.layers.3.mlp.up_proj.kernel`)."""
    if model_type not in RULES:
        raise ValueError(f"no partition rules for model_type {model_type!r}; known: {sorted(RULES)}")
    for pattern, spec in RULES[model_type]:
        if re.fullmatch(pattern, name):
            return spec
    raise ValueError(f"no partition rule of {model_type!r} matches the parameter {name!r} (rules.py)")


def param_specs(model_config, params) -> dict:
    """The `PartitionSpec` of every leaf of a params pytree (arrays or `jax.ShapeDtypeStruct`s)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: partition_spec(model_config.model_type, _dotted(path)), params
    )


def site_spec(model_config, site: str) -> P:
    """The spec of an edit site's kernel `[d_in, d_out]` (its edited matrix is split the same way)."""
    return partition_spec(model_config.model_type, f"{site}.kernel")


def factor_specs(model_config, site: str) -> tuple[P, P]:
    """The specs of a site's shift factors `K [N, d_in]`, `C [N, d_out]`: split like the kernel's dims."""
    d_in, d_out = (tuple(site_spec(model_config, site)) + (None, None))[:2]
    return P(None, d_in), P(None, d_out)


def param_shapes(model_config) -> dict:
    """The params pytree of a model as `jax.ShapeDtypeStruct`s (nothing computed)."""
    return jax.eval_shape(lambda: models.init_params(model_config, jax.random.PRNGKey(0)))


def named(mesh, specs):
    """The `NamedSharding`s on `mesh` of a pytree of `PartitionSpec`s.

    Axes of size 1 split nothing and are dropped (as are trailing whole dimensions), so on a
    one-device mesh every sharding is `P()`: what XLA gives every output there, so a program's
    outputs have its inputs' shardings (and the next call runs the same compiled program).
    """

    def one(spec):
        axes = [a if a is not None and mesh.shape[a] > 1 else None for a in spec]
        while axes and axes[-1] is None:
            axes.pop()
        return NamedSharding(mesh, P(*axes))

    return jax.tree.map(one, specs, is_leaf=lambda x: isinstance(x, P))


def param_shardings(mesh, model_config) -> dict:
    """The `NamedSharding` on `mesh` of every parameter of a model (a pytree like its params)."""
    return named(mesh, param_specs(model_config, param_shapes(model_config)))


def indivisible(model_config, params, axis_sizes: dict[str, int]) -> list[str]:
    """`"name [shape] dimension i"` for every split dimension of `params` that its axis does not divide."""
    problems = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = _dotted(path)
        for dim, axis in enumerate(partition_spec(model_config.model_type, name)):
            if axis is not None and leaf.shape[dim] % axis_sizes[axis]:
                problems.append(f"{name} {list(leaf.shape)} dimension {dim}")
    return problems
