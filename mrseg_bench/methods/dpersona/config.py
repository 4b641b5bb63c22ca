"""D-Persona configuration (defaults = the reference hyperparameters, see docs/methods.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from ...baselines.unet import DEFAULT_DECODER_CHANNELS
from ...latent import check_latent_options
from ...method import MethodConfig
from ...tune.space import Range, integer, log_uniform, uniform


@dataclass
class DPersonaConfig(MethodConfig):
    """Typed D-Persona options; every field can be overridden with ``--set key=value``.

    - ``stage1_epochs`` / ``stage2_epochs``: ``None`` means ``epochs`` (the shared field).
    - ``stage1_recon``: where stage 1's reconstruction latent comes from: ``"posterior"``
      (current reference, default) or ``"prior"`` (the code the paper's numbers came from).
    - ``faithful_stage2``: reproduce the reference's stage 2 (whole net in train mode so frozen
      BatchNorm statistics drift, autograd through the frozen parts, padding-3 heads). Default
      False: frozen parts in eval mode under ``no_grad``, padding-1 heads.
    - ``head_padding``: ``None`` derives it (3 if ``faithful_stage2`` else 1).
    - ``sigma`` / ``sigma_floor``: the latent scale, ``"softplus"`` (bounded, default) or
      ``"exp"`` (the reference's exp(log sigma)); ``kl_warmup_epochs`` and ``free_bits``: the
      options against posterior collapse of ``mrseg_bench.latent`` (default off, as published).
    - ``head_init``: the heads' initialisation, ``"reference"`` (Kaiming-normal weights, bias
      N(0, 1e-3) truncated at 2 sigma, as the reference code) or ``"pytorch"`` (Conv2d's default).
    - ``l2_weight``: weight of the sum of unsquared L2 norms of every parameter tensor (weights
      and biases) of the prior net, the posterior net and Fcomb's hidden layers.
    """

    SEARCH_SPACE: ClassVar[dict[str, Range]] = {  # mrseg_bench.tune.space; docs/tuning.md
        "lr": log_uniform(1e-5, 1e-3, "reference code: Adam 1e-4 in both stages (docs/methods.md); a decade either side (our reasoning; 1e-3 spiked stage 1 in issue 22)"),
        "beta": log_uniform(0.1, 2.0, "reference code: beta = 0.5 on L_bound (docs/methods.md); x/5 below, x4 above (our reasoning)"),
        "kl_weight": log_uniform(0.1, 10.0, "reference code: KL weight 1 (docs/methods.md); a decade either side (our reasoning)"),
        "bank_train": integer(25, 200, "reference code: a bank of N = 100 prior samples in training (docs/methods.md); x/4 to x2 (our reasoning: cost grows with N)", log=True),
        "free_bits": uniform(0.0, 1.0, "our reasoning: 0 (off, as published) to 1 nat per latent dimension, against posterior collapse"),
    }

    stage1_epochs: int | None = None
    stage2_epochs: int | None = None
    latent_dim: int = 6
    beta: float = 0.5
    kl_weight: float = 1.0
    l2_weight: float = 1e-5
    bound_samples: int = 10
    stage1_recon: Literal["posterior", "prior"] = "posterior"
    faithful_stage2: bool = False
    head_padding: int | None = None
    head_channels: tuple[int, ...] = (32, 16)
    head_dropout: float = 0.1
    head_init: Literal["reference", "pytorch"] = "reference"
    bank_train: int = 100
    bank_test: int = 500
    decoder_channels: tuple[int, ...] = DEFAULT_DECODER_CHANNELS
    prior_filters: tuple[int, ...] = (16, 32, 64, 128, 256)
    prior_convs_per_block: int = 3
    fcomb_channels: int = 16
    fcomb_layers: int = 3
    sigma: Literal["softplus", "exp"] = "softplus"
    sigma_floor: float = 1e-3
    kl_warmup_epochs: int = 0
    free_bits: float = 0.0

    def __post_init__(self) -> None:
        where = "DPersonaConfig"
        positive = {
            "latent_dim": self.latent_dim, "bound_samples": self.bound_samples,
            "bank_train": self.bank_train, "bank_test": self.bank_test,
            "prior_convs_per_block": self.prior_convs_per_block,
            "fcomb_channels": self.fcomb_channels, "fcomb_layers": self.fcomb_layers,
        }
        for key, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{where}: {key} must be an integer >= 1, got {value!r}")
        for key in ("stage1_epochs", "stage2_epochs"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{where}: {key} must be None or an integer >= 0, got {value!r}")
        for key in ("beta", "kl_weight", "l2_weight", "lr"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{where}: {key} must be a number >= 0, got {value!r}")
        check_latent_options(where, self.sigma, self.sigma_floor, self.kl_warmup_epochs, self.free_bits)
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"{where}: head_dropout must be in [0, 1), got {self.head_dropout!r}")
        if self.head_init not in ("reference", "pytorch"):
            raise ValueError(f"{where}: head_init must be 'reference' or 'pytorch', got {self.head_init!r}")
        if self.stage1_recon not in ("posterior", "prior"):
            raise ValueError(f"{where}: stage1_recon must be 'posterior' or 'prior', got {self.stage1_recon!r}")
        if self.head_padding is not None and self.head_padding < 0:
            raise ValueError(f"{where}: head_padding must be None or >= 0, got {self.head_padding!r}")
        for key in ("head_channels", "decoder_channels", "prior_filters"):
            value = tuple(getattr(self, key))
            if not value or min(value) < 1:
                raise ValueError(f"{where}: {key} must be a non-empty tuple of positive ints, got {value!r}")
            setattr(self, key, value)
        if len(self.head_channels) != 2:
            raise ValueError(f"{where}: head_channels gives the first two head blocks' widths "
                             f"(the third is latent_dim), got {self.head_channels!r}")

    @property
    def resolved_head_padding(self) -> int:
        """The heads' conv padding: explicit, else 3 (faithful) or 1 (corrected)."""
        if self.head_padding is not None:
            return self.head_padding
        return 3 if self.faithful_stage2 else 1

    @property
    def resolved_stage1_epochs(self) -> int:
        return self.epochs if self.stage1_epochs is None else self.stage1_epochs

    @property
    def resolved_stage2_epochs(self) -> int:
        return self.epochs if self.stage2_epochs is None else self.stage2_epochs
