"""The LLM config that `config.model` describes, read without loading any weights.

`model.path` set: the config.json of that HF directory. Unset: the built-in tiny random model, whose
`model.tiny` fields (besides `model_type` and `seed`) are the fields of an HF config.json of that
architecture, checked exactly as a real one; its vocabulary is the tiny tokenizer's unless
`model.tiny.vocab_size` sets a larger one (e.g. GPT-J's 50400, for benchmarks of real head sizes).
"""

import dataclasses

from rledit_jax import models
from rledit_jax.data import TINY_VOCAB_SIZE


def tiny_model_config(model_config):
    """The config of the built-in tiny model that `model_config.tiny` describes."""
    tiny = dict(model_config.tiny)
    hf = {"model_type": tiny.pop("model_type"), "vocab_size": TINY_VOCAB_SIZE}
    del tiny["seed"]
    config = models.config_from_hf({**hf, **tiny})
    return dataclasses.replace(config, param_dtype=model_config.dtype, dtype=model_config.dtype)


def model_config_of(model_config):
    """The LLM config of `config.model`: `path`'s config.json (no weights read), or the tiny model's."""
    if model_config.path:
        config = models.read_hf_config(model_config.path)
        return dataclasses.replace(config, param_dtype=model_config.dtype, dtype=model_config.dtype)
    return tiny_model_config(model_config)
