"""What is static in the method's compiled programs (`Spec`), and the hypernetworks' state (`Hypernets`).

`Spec` is frozen and hashable: it is the single static argument of every jitted program of the
method (`rledit_jax.jit.program`), so two calls with equal specs and equally shaped arrays run one
compiled program. Everything that changes between calls travels as pytrees:

  Hypernets  nets   {(d_in, d_out): hypernet params}   (`hypernet.py`)
             norms  {(d_in, d_out): NormState}          (`normalizer.py`)
  kernels    {site: [d_in, d_out] float32}              the edited matrices of the edit sites
"""

import dataclasses

import flax.struct
import jax
from jax.sharding import Mesh

from rledit_jax.config_schema import GRADIENT_MODES, METRICS, TOKEN_MODES
from rledit_jax.method import hypernet, normalizer, shift
from rledit_jax.method.packing import Lengths
from rledit_jax.method.sites import SiteLayout
from rledit_jax.models.contract import ModelConfig


@dataclasses.dataclass(frozen=True)
class HParams:
    """The method's hyperparameters (`config.hparams`, DESIGN.md section 3)."""

    rank: int
    n_blocks: int
    lr: float  # initial per-site step size of the predicted update
    meta_lr: float  # Adam learning rate of the hypernetworks
    loc_coef: float
    reg_coef: float
    max_grad_norm: float
    time_decay: float
    back_depth: int  # steps of the window each step's shift is trained on
    token: str  # rows captured per example: "ans" (answer tokens) or "all" (every real token)

    def __post_init__(self):
        if self.token not in TOKEN_MODES:
            raise ValueError(f"token must be one of {TOKEN_MODES}, got {self.token!r}")

    @classmethod
    def from_config(cls, hparams_config) -> "HParams":
        return cls(**{f.name: hparams_config[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class Spec:
    """Everything that decides the structure of a compiled program of the method."""

    model: ModelConfig
    layout: SiteLayout
    hparams: HParams
    lengths: Lengths  # static sizes of the packed steps (`packing.py`)
    gradient: str = "reference"  # how a training sequence's gradient is taken (config.train.gradient)
    metric: str = "token"  # the evaluation's per-row score: "token" accuracy or "counterfact"
    keep_factors: bool = False  # programs also return every step's shift factors (traces)
    curve_every: int = 0  # the evaluation's retention-curve period in steps; 0 = no curve
    shift: str = "solve"  # the shift from the network's output: "solve" (RLEdit, MALMEN) or "sum" (MEND)
    mesh: Mesh | None = None  # the devices and axes the programs run over (`rledit_jax.partitioning`)

    def __post_init__(self):
        if self.gradient not in GRADIENT_MODES:
            raise ValueError(f"gradient must be one of {GRADIENT_MODES}, got {self.gradient!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.shift not in shift.FACTORS:
            raise ValueError(f"shift must be one of {tuple(shift.FACTORS)}, got {self.shift!r}")


@flax.struct.dataclass
class Hypernets:
    """The hypernetworks and their normalisers, one of each per kernel shape of the layout."""

    nets: dict
    norms: dict


def init_hypernets(rng, layout: SiteLayout, hparams: HParams) -> Hypernets:
    """Fresh networks (the identity map, DESIGN.md section 3) and all-zero normaliser statistics."""
    groups = layout.groups
    keys = jax.random.split(rng, len(groups))
    nets = {
        shape: hypernet.init_hypernet(k, *shape, len(names), hparams.rank, hparams.n_blocks, hparams.lr)
        for k, (shape, names) in zip(keys, groups.items())
    }
    return Hypernets(nets=nets, norms={shape: normalizer.init(sum(shape)) for shape in groups})
