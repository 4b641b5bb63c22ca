"""``pionono`` (Schmidt et al., "Probabilistic Modeling of Inter- and Intra-observer Variability in
Medical Image Segmentation", ICCV 2023).

Model: the headless smp U-Net (``build_unet(headless=True)``, 16 features with the default
decoder); per rater r a learnable Gaussian ``q(z|r) = N(mu_r, L_r L_r^T)`` in ``latent_dim`` = 8
dimensions with a lower-triangular scale ``L_r`` (full covariance); a fixed prior ``N(0, (2I)(2I)^T)``
(stored per rater as parameters that are never trained, as in the reference: 576 latent
parameters for 4 raters); at initialisation ``mu_r ~ N(0, 8^2)`` per dimension and ``L_r = 2I``.
Head on ``[features ; z tiled]``: conv1x1 (F+8 -> 16) + ReLU, conv1x1 (16 -> 16) + ReLU, conv1x1
(16 -> 1); Xavier-uniform weights, zero biases. Because the first conv is linear, it is applied
as ``W_f features + W_z z`` (features once per image, z once per draw): the same function as
the concatenation, without tiling z.

Training (one ``Stage``; the latent means and scales in their own param group at
``latent_lr`` = 0.02, everything else at ``lr``): for each reconstructed (image, rater) pair,
``train_draws`` = 5 reparameterised draws of that rater's z, their logit maps averaged, the
generalised Dice loss on the mean; ``+ kl_weight (5e-4) * KL(q(z|r) || prior)`` (mean over
the pairs) ``+ l2_weight (1e-5) *`` the sum of the L2 norms of the head's hidden layers.
``recon_raters``: ``"one"`` (default, the reference, whose loader pairs each image with one
annotation) one valid rater drawn per image; ``"all"`` every valid rater of every image, masked
with ``rater_valid``: each rater's latent then gets a gradient from every image instead of 1/R
of them (R times the supervision of the reference, at the cost of the 1x1 head only).

Prediction: ``personalized[:, r]`` = sigmoid of the mean of ``predict_draws`` = 20 logit maps
drawn from q(z|r); ``samples`` = ``n_samples`` individual draws spread evenly over the raters
(draw i comes from rater ``i mod R``). All draws of all raters run in one batched head pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..method import Method, MethodConfig, MethodInfo, Stage
from ..registry import register_method
from ..tune.space import Range, log_uniform
from ..types import Capability, DatasetInfo, MultiRaterBatch, Prediction
from .common import check_io, per_rater_generalised_dice_loss, remember_io, select_raters
from .unet import DEFAULT_DECODER_CHANNELS, build_unet


@dataclass
class PiononoConfig(MethodConfig):
    SEARCH_SPACE: ClassVar[dict[str, Range]] = {  # mrseg_bench.tune.space; docs/tuning.md
        "lr": log_uniform(1e-5, 1e-3, "reference: D-Persona's comparison trains the baselines with Adam 1e-4 (docs/more-baselines.md); a decade either side (our reasoning)"),
        "latent_lr": log_uniform(2e-3, 0.2, "reference code: latent lr 0.02 (docs/more-baselines.md); a decade either side (our reasoning)"),
        "kl_weight": log_uniform(5e-5, 5e-3, "reference code: KL weight 5e-4 (docs/more-baselines.md); a decade either side (our reasoning)"),
    }

    decoder_channels: tuple[int, ...] = DEFAULT_DECODER_CHANNELS
    latent_dim: int = 8
    head_width: int = 16
    latent_lr: float = 0.02
    mu_init_std: float = 8.0
    init_scale: float = 2.0
    prior_scale: float = 2.0
    train_draws: int = 5
    predict_draws: int = 20
    kl_weight: float = 5e-4
    l2_weight: float = 1e-5
    recon_raters: Literal["all", "one"] = "one"


def full_gaussian_kl(mu_q: torch.Tensor, tril_q: torch.Tensor, mu_p: torch.Tensor,
                     tril_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, L_q L_q^T) || N(mu_p, L_p L_p^T)) for batches ``[...,D]``/``[...,D,D]``::

        1/2 [ ||L_p^-1 L_q||_F^2 + ||L_p^-1 (mu_p - mu_q)||^2 - D + 2 sum log|diag L_p| - 2 sum log|diag L_q| ]
    """
    d = mu_q.shape[-1]
    m = torch.linalg.solve_triangular(tril_p, tril_q, upper=False)
    v = torch.linalg.solve_triangular(tril_p, (mu_p - mu_q)[..., None], upper=False)[..., 0]
    logdet_p = tril_p.diagonal(dim1=-2, dim2=-1).abs().log().sum(-1)
    logdet_q = tril_q.diagonal(dim1=-2, dim2=-1).abs().log().sum(-1)
    return 0.5 * (m.pow(2).sum((-2, -1)) + v.pow(2).sum(-1) - d + 2 * (logdet_p - logdet_q))


class RaterLatents(nn.Module):
    """Per-rater posterior ``N(mu_r, L_r L_r^T)`` and the fixed prior (never trained)."""

    def __init__(self, num_raters: int, dim: int, mu_std: float, init_scale: float, prior_scale: float) -> None:
        super().__init__()
        eye = torch.eye(dim).repeat(num_raters, 1, 1)
        self.posterior_mu = nn.Parameter(torch.randn(num_raters, dim) * mu_std)
        self.posterior_tril = nn.Parameter(eye * init_scale)
        self.prior_mu = nn.Parameter(torch.zeros(num_raters, dim), requires_grad=False)
        self.prior_tril = nn.Parameter(eye * prior_scale, requires_grad=False)

    def scale_tril(self) -> torch.Tensor:
        return torch.tril(self.posterior_tril)

    def sample(self, index: torch.Tensor, draws: int) -> torch.Tensor:
        """Reparameterised draws ``z [*index.shape, draws, D]`` of the raters in ``index``."""
        mu = self.posterior_mu[index]  # [...,D]
        tril = self.scale_tril()[index]  # [...,D,D]
        eps = torch.randn(*index.shape, draws, mu.shape[-1], device=mu.device, dtype=mu.dtype)
        return mu[..., None, :] + torch.einsum("...ij,...kj->...ki", tril, eps)

    def kl(self) -> torch.Tensor:
        """KL(q(z|r) || prior) per rater ``[R]``."""
        return full_gaussian_kl(self.posterior_mu, self.scale_tril(), self.prior_mu, self.prior_tril)


class PiononoHead(nn.Module):
    """conv1x1 (F+D -> H) + ReLU, conv1x1 (H -> H) + ReLU, conv1x1 (H -> 1) on [features ; z]."""

    def __init__(self, features: int, latent_dim: int, hidden: int = 16) -> None:
        super().__init__()
        self.features = features
        self.layers = nn.ModuleList([nn.Conv2d(features + latent_dim, hidden, 1), nn.Conv2d(hidden, hidden, 1),
                                     nn.Conv2d(hidden, 1, 1)])
        for conv in self.layers:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, feats: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``feats [B,F,H,W]``, ``z [B,M,D]`` -> logits ``[B,M,H,W]`` (one map per draw)."""
        first, mid, last = self.layers
        w = first.weight[:, :, 0, 0]  # [H, F+D]
        from_feats = F.conv2d(feats, first.weight[:, : self.features])  # [B,H,h,w]
        from_z = z @ w[:, self.features:].T + first.bias  # [B,M,H]
        x = F.relu(from_feats[:, None] + from_z[..., None, None])  # [B,M,H,h,w]
        x = F.relu(torch.einsum("oc,bmchw->bmohw", mid.weight[:, :, 0, 0], x) + mid.bias[:, None, None])
        return torch.einsum("c,bmchw->bmhw", last.weight[0, :, 0, 0], x) + last.bias[0]

    def l2(self) -> torch.Tensor:
        """Sum of the L2 norms of the hidden layers' parameters (weights and biases)."""
        return sum(p.norm(2) for conv in self.layers[:2] for p in conv.parameters())


class PiononoNet(nn.Module):
    def __init__(self, backbone: nn.Module, latents: RaterLatents, head: PiononoHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.latents = latents
        self.head = head

    def forward(self, images: torch.Tensor, index: torch.Tensor, draws: int) -> torch.Tensor:
        """Logits ``[B,K,draws,H,W]`` for rater ``index [B,K]`` of each image (K raters per image)."""
        feats = self.backbone(images)
        b, k = index.shape
        z = self.latents.sample(index, draws).reshape(b, k * draws, -1)
        return self.head(feats, z).view(b, k, draws, *feats.shape[-2:])


class Pionono(Method):
    info = MethodInfo(
        "pionono",
        "Schmidt et al., Probabilistic Modeling of Inter- and Intra-observer Variability in Medical "
        "Image Segmentation, ICCV 2023",
        frozenset({Capability.PERSONALIZED, Capability.DIVERSE}), PiononoConfig,
        "per-rater full-covariance Gaussian latent + 1x1 head; personalised = mean of 20 draws, "
        "samples = draws spread over raters",
    )
    cfg: PiononoConfig

    def __init__(self, cfg: PiononoConfig) -> None:
        for key in ("latent_dim", "head_width", "train_draws", "predict_draws"):
            if int(getattr(cfg, key)) < 1:
                raise ValueError(f"pionono: {key} must be >= 1, got {getattr(cfg, key)}")
        for key in ("latent_lr", "mu_init_std", "kl_weight", "l2_weight"):
            value = float(getattr(cfg, key))
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"pionono: {key} must be finite and >= 0, got {value}")
        if cfg.init_scale <= 0 or cfg.prior_scale <= 0:
            raise ValueError(f"pionono: init_scale and prior_scale must be > 0, got {cfg.init_scale}, {cfg.prior_scale}")
        if cfg.recon_raters not in ("all", "one"):
            raise ValueError(f"pionono: recon_raters must be 'all' or 'one', got {cfg.recon_raters!r}")
        super().__init__(cfg)

    def build(self, dataset_info: DatasetInfo) -> nn.Module:
        c = self.cfg
        if dataset_info.num_raters < 1:
            raise ValueError(f"pionono: dataset {dataset_info.name!r} has no raters")
        backbone = build_unet(dataset_info.in_channels, encoder_name=c.encoder_name, encoder_weights=c.encoder_weights,
                              headless=True, decoder_channels=c.decoder_channels)
        latents = RaterLatents(dataset_info.num_raters, c.latent_dim, c.mu_init_std, c.init_scale, c.prior_scale)
        head = PiononoHead(int(backbone.out_channels), c.latent_dim, c.head_width)
        return remember_io(PiononoNet(backbone, latents, head), dataset_info.in_channels, dataset_info.num_raters)

    def param_groups(self, model: nn.Module, stage: Stage) -> list[dict[str, Any]]:
        net = getattr(model, "_orig_mod", model)
        latent = [net.latents.posterior_mu, net.latents.posterior_tril]
        rest = [*net.backbone.parameters(), *net.head.parameters()]
        return [{"params": rest, "lr": stage.lr, "name": "unet_head"},
                {"params": latent, "lr": self.cfg.latent_lr, "name": "latent"}]

    def training_step(self, model: nn.Module, batch: MultiRaterBatch, stage: Stage) -> dict[str, torch.Tensor]:
        check_io("pionono", model, batch.image, batch.masks)
        net = getattr(model, "_orig_mod", model)
        index, target, valid = select_raters(self.cfg.recon_raters, batch.masks, batch.rater_valid, where="pionono")
        logits = model(batch.image, index, self.cfg.train_draws).float().mean(dim=2)  # [B,K,H,W]
        recon = per_rater_generalised_dice_loss(logits, target, valid)
        vw = valid.float()
        kl = (net.latents.kl()[index] * vw).sum() / vw.sum()
        l2 = net.head.l2()
        loss = recon + self.cfg.kl_weight * kl + self.cfg.l2_weight * l2
        return {"loss": loss, "recon": recon.detach(), "kl": kl.detach(), "l2": l2.detach()}

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, n_samples: int) -> Prediction:
        """personalized ``[B,R,H,W]`` (mean of ``predict_draws`` logit maps per rater) and samples
        ``[B,n_samples,H,W]`` (draw i from rater i mod R), in one batched pass. The caller sets eval mode."""
        check_io("pionono", model, images)
        n = int(n_samples)
        if n < 1:
            raise ValueError(f"pionono: n_samples must be >= 1, got {n_samples}")
        net = getattr(model, "_orig_mod", model)
        r = net.latents.posterior_mu.shape[0]
        k = self.cfg.predict_draws
        b = images.shape[0]
        per_rater = torch.arange(r, device=images.device).repeat_interleave(k)  # [R*k]
        spread = torch.arange(n, device=images.device) % r  # [n]
        index = torch.cat([per_rater, spread]).expand(b, -1)  # [B, R*k + n]
        logits = model(images, index, 1)[:, :, 0].float()  # [B, R*k + n, H, W]
        personal = logits[:, : r * k].unflatten(1, (r, k)).mean(2)
        return Prediction(samples=torch.sigmoid(logits[:, r * k:]), personalized=torch.sigmoid(personal))


@register_method("pionono")
def pionono(cfg: PiononoConfig | None = None) -> Pionono:
    """Pionono: per-rater Gaussian latents with full covariance on a U-Net."""
    return Pionono(cfg or PiononoConfig())
