"""The ``probunet`` method: config presets, ELBO training step, batched prior sampling.

Presets (``backbone``):
- ``"smp"`` (default, the D-Persona comparison): headless smp U-Net (ResNet34 encoder, decoder
  channels (256,128,64,32,16) -> 16 features), prior/posterior filters (16,32,64,128,256),
  latent 6, beta 1, generalised Dice reconstruction.
- ``"kohl"``: the classic Kohl U-Net (filters 32,64,128,192 -> 32 features), prior/posterior
  filters = the U-Net's, latent 6, beta 1, BCE reconstruction.

Loss = recon(Fcomb(features, z ~ q(z|x,y)), y) + w_e * beta * KL(q || p) + l2_weight * L2, with y ONE
valid rater's mask drawn per image per step, KL analytic (``kl_divergence``), batch mean, and L2
the sum of the unsquared L2 norms of the prior, posterior and Fcomb parameters. The ``"bce"``
reconstruction is the ELBO's negative log-likelihood: per-image SUM over pixels, mean over the
batch (so beta weighs the KL as in Kohl et al.); ``"gdl"`` is ``losses.generalised_dice_loss``.

Stability and anti-collapse options (``mrseg_bench.latent``): ``sigma="softplus"`` (default,
bounded: sigma = softplus(s) + ``sigma_floor``) or ``"exp"`` (the reference's exp(log sigma),
which overflows with Kohl's summed BCE); ``kl_warmup_epochs`` (w_e grows linearly to 1;
default 0 = off, as in the paper) and ``free_bits`` (nats per latent dimension; default 0).

``predict_latent="mean"`` is a control, not a method: training is unchanged, but every
predicted sample uses the prior's mean, so the N samples are identical (what a collapsed latent
would give); it measures how much the metrics of samples owe to the latent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from ...latent import check_latent_options, kl_loss, kl_warmup_weight
from ...losses import bce_loss, generalised_dice_loss
from ...method import Method, MethodConfig, MethodInfo, Stage
from ...registry import register_method
from ...tune.space import Range, log_uniform, uniform
from ...types import Capability, DatasetInfo, MultiRaterBatch, Prediction
from ..common import check_io, draw_valid_rater, remember_io
from ..unet import DEFAULT_DECODER_CHANNELS, build_backbone
from .model import ProbUNetModel

SMP_LATENT_FILTERS = (16, 32, 64, 128, 256)


@dataclass
class ProbUNetConfig(MethodConfig):
    """``prior_filters=()`` and ``recon_loss="auto"`` take the preset of ``backbone``
    (smp: (16,32,64,128,256) and gdl; kohl: ``kohl_filters`` and bce). ``prior_filters`` (the
    prior and posterior nets' filters) has D-Persona's field name, so one preset key sizes both."""

    SEARCH_SPACE: ClassVar[dict[str, Range]] = {  # mrseg_bench.tune.space; docs/tuning.md
        "lr": log_uniform(1e-5, 1e-3, "reference: D-Persona's comparison trains the baselines with Adam 1e-4 (docs/methods.md); a decade either side (our reasoning)"),
        "beta": log_uniform(0.1, 10.0, "reference: KL weight 1 in D-Persona's comparison, 10 in the PyTorch port (docs/methods.md); down to 0.1 against prior collapse (our reasoning)"),
        "free_bits": uniform(0.0, 1.0, "our reasoning: 0 (off, as published) to 1 nat per latent dimension, against the prior collapse measured in issue 22"),
    }

    backbone: Literal["smp", "kohl"] = "smp"
    decoder_channels: tuple[int, ...] = DEFAULT_DECODER_CHANNELS
    kohl_filters: tuple[int, ...] = (32, 64, 128, 192)
    latent_dim: int = 6
    prior_filters: tuple[int, ...] = ()
    beta: float = 1.0
    recon_loss: Literal["auto", "gdl", "bce"] = "auto"
    l2_weight: float = 1e-5
    sigma: Literal["softplus", "exp"] = "softplus"
    sigma_floor: float = 1e-3
    kl_warmup_epochs: int = 0
    free_bits: float = 0.0
    predict_latent: Literal["sample", "mean"] = "sample"

    def resolved_prior_filters(self) -> tuple[int, ...]:
        if self.prior_filters:
            return tuple(self.prior_filters)
        return SMP_LATENT_FILTERS if self.backbone == "smp" else tuple(self.kohl_filters)

    def resolved_recon_loss(self) -> str:
        if self.recon_loss != "auto":
            return self.recon_loss
        return "gdl" if self.backbone == "smp" else "bce"


class ProbUNet(Method):
    """Probabilistic U-Net; DIVERSE only: ``predict`` returns ``samples [B,N,H,W]``."""

    info = MethodInfo(
        name="probunet",
        paper="Kohl et al., A Probabilistic U-Net for Segmentation of Ambiguous Images, NeurIPS 2018",
        capabilities=frozenset({Capability.DIVERSE}),
        config_cls=ProbUNetConfig,
        description="prior/posterior Gaussian latent + Fcomb on U-Net features; N prior samples",
    )
    cfg: ProbUNetConfig

    def __init__(self, cfg: ProbUNetConfig) -> None:
        if cfg.latent_dim < 1:
            raise ValueError(f"probunet: latent_dim must be >= 1, got {cfg.latent_dim}")
        if cfg.beta < 0 or cfg.l2_weight < 0:
            raise ValueError(f"probunet: beta and l2_weight must be >= 0, got {cfg.beta}, {cfg.l2_weight}")
        check_latent_options("probunet", cfg.sigma, cfg.sigma_floor, cfg.kl_warmup_epochs, cfg.free_bits)
        super().__init__(cfg)

    def build(self, dataset_info: DatasetInfo) -> nn.Module:
        c = self.cfg
        backbone = build_backbone(c.backbone, dataset_info.in_channels, c.encoder_name,
                                  c.encoder_weights, c.decoder_channels, c.kohl_filters)
        return remember_io(ProbUNetModel(backbone, dataset_info.in_channels, c.latent_dim,
                                         c.resolved_prior_filters(), sigma=c.sigma, sigma_floor=c.sigma_floor),
                           dataset_info.in_channels, dataset_info.num_raters)

    def training_step(self, model: nn.Module, batch: MultiRaterBatch, stage: Stage) -> dict[str, torch.Tensor]:
        check_io("probunet", model, batch.image, batch.masks)
        mask, _ = draw_valid_rater(batch.masks, batch.rater_valid)
        images = batch.image
        features, prior = model.encode(images)
        posterior = model.posterior_of(images, mask)
        logits = model.fcomb(features, posterior.rsample())
        if self.cfg.resolved_recon_loss() == "gdl":
            recon = generalised_dice_loss(logits, mask)
        else:
            recon = bce_loss(logits, mask) * float(mask.shape[-2] * mask.shape[-1])
        kl = kl_loss(posterior, prior, self.cfg.free_bits)
        l2 = model.l2_regulariser()
        warm = kl_warmup_weight(self.epoch_of(stage), self.cfg.kl_warmup_epochs)
        loss = recon + warm * self.cfg.beta * kl + self.cfg.l2_weight * l2
        return {"loss": loss, "recon": recon.detach(), "kl": kl.detach(), "l2": l2.detach()}

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, n_samples: int) -> Prediction:
        """``n_samples`` prior samples in one pass (image encoded once). The caller sets eval mode."""
        if int(n_samples) < 1:
            raise ValueError(f"probunet.predict: n_samples must be >= 1, got {n_samples}")
        check_io("probunet", model, images)
        at_mean = self.cfg.predict_latent == "mean"
        return Prediction(samples=torch.sigmoid(model.sample_logits(images, int(n_samples), at_mean).float()))


@register_method("probunet")
def probunet(cfg: ProbUNetConfig | None = None) -> ProbUNet:
    """The Probabilistic U-Net (default: the D-Persona comparison preset, ``backbone="smp"``)."""
    return ProbUNet(cfg or ProbUNetConfig())
