"""D-Persona as a benchmark ``Method``: two stages, diverse samples and personalised outputs.

- stage1 ("diversification"): trains backbone, prior, posterior and Fcomb (not the heads).
- stage2 ("personalisation"): trains the R projection heads only. Default: the frozen parts are
  in eval mode and run under ``no_grad`` (BatchNorm statistics do not drift). With
  ``faithful_stage2`` the whole net stays in train mode, frozen parameters keep
  ``requires_grad`` (autograd runs through them; only the heads are stepped) and the heads pad
  by 3, as in the reference code.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from ...baselines.common import check_io, remember_io
from ...latent import kl_warmup_weight
from ...method import Method, MethodInfo, Stage
from ...registry import register_method
from ...types import Capability, DatasetInfo, MultiRaterBatch, Prediction
from .config import DPersonaConfig
from .losses import stage1_losses, stage2_losses
from .model import DPersonaNet

STAGE1, STAGE2 = "stage1", "stage2"


def _unwrap(model: nn.Module) -> nn.Module:
    """The DPersonaNet inside a ``torch.compile`` or DistributedDataParallel wrapper (the
    training step calls its submodules directly, so they run eagerly)."""
    for _ in range(3):
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            break
        model = inner
    return model


class DPersona(Method):
    info = MethodInfo(
        name="dpersona",
        paper="Wu et al., Diversified and Personalized Multi-rater Medical Image Segmentation, CVPR 2024",
        capabilities=frozenset({Capability.DIVERSE, Capability.PERSONALIZED}),
        config_cls=DPersonaConfig,
        description="Probabilistic U-Net with a bound loss (stage 1), then one query head per rater "
                    "attending over prior samples (stage 2).",
    )

    def __init__(self, cfg: DPersonaConfig) -> None:
        if not isinstance(cfg, DPersonaConfig):
            raise ValueError(f"dpersona: config must be a DPersonaConfig, got {type(cfg).__name__}")
        super().__init__(cfg)
        self.cfg: DPersonaConfig = cfg
        self._steps: dict[str, int] = defaultdict(int)

    def build(self, dataset_info: DatasetInfo) -> DPersonaNet:
        c = self.cfg
        return remember_io(DPersonaNet(
            dataset_info.in_channels, dataset_info.num_raters, latent_dim=c.latent_dim,
            encoder_name=c.encoder_name, encoder_weights=c.encoder_weights,
            decoder_channels=c.decoder_channels, prior_filters=c.prior_filters,
            prior_convs_per_block=c.prior_convs_per_block, fcomb_channels=c.fcomb_channels,
            fcomb_layers=c.fcomb_layers, head_channels=c.head_channels,
            head_padding=c.resolved_head_padding, head_dropout=c.head_dropout,
            sigma=c.sigma, sigma_floor=c.sigma_floor,
        ), dataset_info.in_channels, dataset_info.num_raters)

    def stages(self) -> list[Stage]:
        c = self.cfg
        return [Stage(STAGE1, epochs=c.resolved_stage1_epochs, lr=c.lr, monitor="loss", mode="min"),
                Stage(STAGE2, epochs=c.resolved_stage2_epochs, lr=c.lr, monitor="loss", mode="min")]

    def select_metric(self, stage: Stage) -> str:
        """Stage 1 trains the sampler: ``dice_match`` (Hungarian-matched sample/rater Dice);
        stage 2 the heads: ``per_rater_dice_matched``. These are the reference's choices
        (Dice_match, Dice_each_mean), here on the validation split instead of the test fold."""
        return "dice_match" if stage.name == STAGE1 else "per_rater_dice_matched"

    @staticmethod
    def _check(model: nn.Module, stage: Stage | None = None) -> DPersonaNet:
        net = _unwrap(model)
        if not isinstance(net, DPersonaNet):
            raise ValueError(f"dpersona: model must be a DPersonaNet, got {type(model).__name__}")
        if stage is None:
            return net
        if stage.name not in (STAGE1, STAGE2):
            raise ValueError(f"dpersona: unknown stage {stage.name!r}; known: {STAGE1}, {STAGE2}")
        return net

    def stage_parameters(self, model: nn.Module, stage: Stage) -> list[nn.Parameter]:
        net = self._check(model, stage)
        if stage.name == STAGE1:
            return [p for m in net.stage1_modules() for p in m.parameters()]
        return list(net.heads.parameters())

    def begin_stage(self, model: nn.Module, stage: Stage) -> None:
        """Stage 1: heads frozen. Stage 2: all but the heads frozen (faithful: nothing frozen
        for autograd, as in the reference; the optimiser still only holds the heads)."""
        net = self._check(model, stage)
        train_all = stage.name == STAGE2 and self.cfg.faithful_stage2
        for m in net.stage1_modules():
            m.requires_grad_(stage.name == STAGE1 or train_all)
        net.heads.requires_grad_(stage.name == STAGE2)

    def train_mode(self, model: nn.Module, stage: Stage) -> None:
        net = self._check(model, stage)
        if stage.name == STAGE1 or self.cfg.faithful_stage2:
            net.train()
        else:
            net.eval()
            net.heads.train()

    def training_step(self, model: nn.Module, batch: MultiRaterBatch, stage: Stage) -> dict[str, torch.Tensor]:
        net = self._check(model, stage)
        check_io("dpersona", net, batch.image)
        images, masks, valid = batch.image, batch.masks.float(), batch.rater_valid.bool()
        if masks.ndim != 4 or masks.shape[1] != net.num_raters or valid.shape != masks.shape[:2]:
            raise ValueError(f"dpersona: batch masks {tuple(masks.shape)} / rater_valid {tuple(valid.shape)} "
                             f"do not fit a model with {net.num_raters} raters")
        if not bool(valid.any(1).all()):
            raise ValueError("dpersona: a sample in the batch has no valid rater (rater_valid all False)")
        c = self.cfg
        if stage.name == STAGE1:
            out = stage1_losses(net, images, masks, valid, recon=c.stage1_recon, beta=c.beta,
                                kl_weight=c.kl_weight * kl_warmup_weight(self.epoch_of(stage), c.kl_warmup_epochs),
                                l2_weight=c.l2_weight, bound_samples=c.bound_samples, free_bits=c.free_bits)
        else:
            out = stage2_losses(net, images, masks, valid, bank_size=c.bank_train,
                                frozen_no_grad=not c.faithful_stage2)
        out = {k: v if k == "loss" else v.detach() for k, v in out.items()}
        step = self._steps[stage.name]
        self._steps[stage.name] += 1
        if not bool(torch.isfinite(out["loss"])):
            parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in out.items())
            raise FloatingPointError(
                f"dpersona {stage.name} (training_step call {step}): non-finite loss ({parts})")
        return out

    def predict(self, model: nn.Module, images: torch.Tensor, n_samples: int) -> Prediction:
        """``samples [B,n,H,W]`` (sigmoid of n prior samples) and ``personalized [B,R,H,W]``
        (heads querying a bank of ``bank_test`` prior samples). Runs in eval mode, no_grad."""
        model = self._check(model)
        if int(n_samples) < 1:
            raise ValueError(f"dpersona: n_samples must be >= 1, got {n_samples}")
        check_io("dpersona", model, images)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                samples, personal = model(images, n_samples=int(n_samples), bank_size=self.cfg.bank_test)
        finally:
            model.train(was_training)
        return Prediction(samples=torch.sigmoid(samples.float()), personalized=torch.sigmoid(personal.float()))


@register_method("dpersona")
def dpersona(cfg: DPersonaConfig | None = None) -> DPersona:
    """D-Persona with ``cfg`` (default: the reference hyperparameters)."""
    return DPersona(cfg or DPersonaConfig())
