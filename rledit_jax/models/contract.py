"""The model contract: what generic code (probes, the method, the edit library) may use of a model.

Every architecture's config is a frozen, hashable dataclass (a static argument of jitted programs)
that satisfies `ModelConfig`. Generic code uses only these members and the functions of
`rledit_jax.models` (forward, hidden states entering a layer, forward from a layer onwards, probes,
site access); nothing else of an architecture.
"""

from typing import ClassVar, Protocol


class ModelConfig(Protocol):
    model_type: ClassVar[str]  # the HF `model_type`, key of `registry.ARCHITECTURES`
    vocab_size: int  # rows of the embedding table and width of the logits
    param_dtype: str  # storage dtype of the weights ("float32" / "bfloat16")
    dtype: str  # dtype of the matmuls; softmax, norms' statistics and logits are float32 regardless

    @property
    def max_length(self) -> int:
        """The longest sequence the model takes (its positions)."""

    @property
    def n_layers(self) -> int:
        """Transformer blocks; `forward_from(..., layer)` runs blocks `layer .. n_layers - 1`."""

    def linear_sites(self) -> dict[str, tuple[int, int]]:
        """Every linear an edit may target, by HF module name, with its kernel shape `(d_in, d_out)`."""

    def site_layer(self, site: str) -> int:
        """The block a linear site belongs to (`n_layers` for the LM head)."""
