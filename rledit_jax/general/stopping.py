"""Where the reference's `model.generate` stops before `gen_len` tokens: at the model's eos.

HF generation stops after emitting any id of its generation config's `eos_token_id` (an int or a
list), which `from_pretrained` reads from the model directory's `generation_config.json`, else from
`config.json`. The stop token itself is part of the output.
"""

import json
from collections.abc import Collection, Sequence
from pathlib import Path


def stop_ids_of(model_dir: str | Path) -> tuple[int, ...]:
    """The eos ids of an HF model directory (empty when it names none)."""
    for name in ("generation_config.json", "config.json"):
        path = Path(model_dir) / name
        if path.is_file():
            with open(path) as f:
                eos = json.load(f).get("eos_token_id")
            if eos is not None:
                return tuple(eos) if isinstance(eos, list) else (int(eos),)
    return ()


def cut_at_stop(ids: Sequence[int], stop_ids: Collection[int]) -> list[int]:
    """`ids` up to and including the first stop id."""
    for n, i in enumerate(ids):
        if i in stop_ids:
            return list(ids[: n + 1])
    return list(ids)
