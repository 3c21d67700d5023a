"""The conversion table between our params pytree and an HF checkpoint: one row per parameter."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class HFTensor:
    """One parameter of an architecture's HF checkpoint.

    `path`: where it lives in our params pytree; `name`: its HF tensor name; `transpose`: HF stores it
    transposed (linear weights are `[out, in]` there, our kernels `[in, out]`); `aliases`: other HF
    names that hold the same tensor (tied or aliased weights, e.g. `lm_head.weight` of a model with
    tied embeddings): read on load, where they must equal the primary (or stand in for it when the
    checkpoint lacks it), never written.
    """

    path: tuple[str, ...]
    name: str
    transpose: bool = False
    aliases: tuple[str, ...] = ()
