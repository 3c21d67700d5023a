"""What each method of `config.method` is, and the hyperparameters and spec fields it runs with.

  method          network  shift   trained (default scheme)   lifelong editing
  rledit          yes      solve   sequence                   frozen network
  malmen          yes      solve   per_batch                  frozen network
  mend            yes      sum     per_batch                  frozen network
  malmen_retrain  yes      solve   per_batch                  a fresh network retrained on the edited
  mend_retrain    yes      sum     per_batch                  model every `baselines.retrain.every` steps
  ridge           identity solve   no                         the untrained network (no blocks)
  ft              no       -       no                         Adam on the sites' kernels per batch

"solve" is RLEdit's least-squares shift, "sum" MEND's sum of rank-1 updates (`method/shift.py`).
"""

import dataclasses

from rledit_jax.config_schema import METHODS as METHOD_NAMES
from rledit_jax.method.spec import HParams


@dataclasses.dataclass(frozen=True)
class Method:
    shift: str | None  # `Spec.shift`; None: no hypernetwork
    scheme: str | None  # the default `train.scheme`; None: not trained
    retrain: bool = False  # retrained on the edited model during lifelong editing
    section: str | None = None  # the `config.baselines` section whose fields replace `hparams`'

    @property
    def trained(self) -> bool:
        return self.scheme is not None


METHODS = {
    "rledit": Method("solve", "sequence"),
    "malmen": Method("solve", "per_batch"),
    "mend": Method("sum", "per_batch", section="mend"),
    "malmen_retrain": Method("solve", "per_batch", retrain=True),
    "mend_retrain": Method("sum", "per_batch", retrain=True, section="mend"),
    "ridge": Method("solve", None, section="ridge"),
    "ft": Method(None, None),
}
assert tuple(METHODS) == METHOD_NAMES


def scheme_of(config) -> str | None:
    """The training scheme `config` runs: `train.scheme`, else the method's own (None: not trained)."""
    return config.train.scheme or METHODS[config.method].scheme


def sequence_trained(config) -> bool:
    """A network trained by sequences and then frozen: the job `bin/train` runs itself (checkpoints,
    resuming, traces); the other methods run through `baselines.lifelong`."""
    method = METHODS[config.method]
    return scheme_of(config) == "sequence" and not method.retrain


def hparams_of(config) -> HParams:
    """The method's hyperparameters: `hparams`, with its `baselines` section's fields in their place.

    - an untrained network (ridge) is the identity map, built without blocks;
    - the per_batch scheme's loss is one batch's (a window of depth 1) without the L2 term, as the
      reference's `BaseEditor.train` (so `reg_coef` is unused there).
    """
    method = METHODS[config.method]
    fields = dict(config.hparams)
    if method.section:
        fields.update(config.baselines[method.section])
    if method.shift and not method.trained:
        fields["n_blocks"] = 0
    if scheme_of(config) == "per_batch":
        fields.update(back_depth=1, reg_coef=0.0)
    return HParams.from_config(fields)


def shift_of(config) -> str:
    """`Spec.shift` of the method (ft has no network: its spec only carries the model, sites and lengths)."""
    return METHODS[config.method].shift or "solve"
