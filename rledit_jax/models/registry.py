"""Architectures by HF `model_type`: adding one is one new module plus one entry here.

An `Architecture` bundles what the rest of the project needs from a model family: the config
conversion both ways, the linen module, and the table mapping our param paths to HF tensor names.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn

from rledit_jax.models import gemma2, gptj, llama, llamalike, llamalike_hf, mistral, qwen2
from rledit_jax.models.table import HFTensor


@dataclasses.dataclass(frozen=True)
class Architecture:
    config_from_hf: Callable[[dict[str, Any], frozenset[str]], Any]
    config_to_hf: Callable[[Any], dict[str, Any]]
    module: Callable[[Any], nn.Module]
    # One row per parameter: our params path, HF tensor name, layout and aliases.
    hf_param_table: Callable[[Any], list[HFTensor]]
    # HF tensor-name suffixes of buffers that carry no parameters and are skipped on load.
    hf_ignored_suffixes: tuple[str, ...]


def _llamalike(variant) -> Architecture:
    """A Llama-like variant: its own config conversion, the shared module and name table."""
    return Architecture(
        config_from_hf=variant.config_from_hf,
        config_to_hf=variant.config_to_hf,
        module=llamalike.LlamaLikeForCausalLM,
        hf_param_table=llamalike_hf.hf_param_table,
        hf_ignored_suffixes=llamalike_hf.HF_IGNORED_SUFFIXES,
    )


ARCHITECTURES: dict[str, Architecture] = {
    "gptj": Architecture(
        config_from_hf=gptj.config_from_hf,
        config_to_hf=gptj.config_to_hf,
        module=gptj.GPTJForCausalLM,
        hf_param_table=gptj.hf_param_table,
        hf_ignored_suffixes=gptj.HF_IGNORED_SUFFIXES,
    ),
    "llama": _llamalike(llama),
    "mistral": _llamalike(mistral),
    "gemma2": _llamalike(gemma2),
    "qwen2": _llamalike(qwen2),
}


def architecture(model_type: str) -> Architecture:
    if model_type not in ARCHITECTURES:
        raise ValueError(f"model_type {model_type!r} is not supported; supported: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[model_type]
