"""Probabilistic U-Net: KL, posterior conditioning, batched sampling, presets, parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

from mrseg_bench.baselines.probunet import (
    Fcomb,
    GaussianConvEncoder,
    ProbUNet,
    ProbUNetConfig,
    l2_norm_sum,
)
from mrseg_bench.method import Stage
from mrseg_bench.types import DatasetInfo, MultiRaterBatch

INFO1 = DatasetInfo("d", 1, 3, ("a", "b", "c"), (128, 128))
KOHL_TINY = ProbUNetConfig(backbone="kohl", kohl_filters=(8, 16, 32), latent_dim=3)


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    method = ProbUNet(KOHL_TINY)
    return method, method.build(INFO1)


def hand_kl(q: Independent, p: Independent) -> torch.Tensor:
    mq, sq, mp, sp = q.base_dist.loc, q.base_dist.scale, p.base_dist.loc, p.base_dist.scale
    return (torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5).sum(-1)


def test_training_step_kl_is_the_analytic_kl_and_nonnegative():
    method, model = tiny_model()
    images = torch.randn(3, 1, 16, 16)
    mask = (torch.rand(3, 1, 16, 16) > 0.5).to(torch.uint8)
    batch = MultiRaterBatch(images, mask.repeat(1, 3, 1, 1), torch.ones(3, 3, dtype=torch.bool))
    parts = method.training_step(model, batch, Stage("train", 1, 1e-3))
    expected = hand_kl(model.posterior_of(images, mask.float()), model.prior(images))
    assert (expected >= 0).all()
    assert torch.allclose(parts["kl"], expected.mean(), rtol=1e-5, atol=1e-6)
    assert float(parts["kl"]) >= 0
    total = parts["recon"] + KOHL_TINY.beta * parts["kl"] + KOHL_TINY.l2_weight * parts["l2"]
    assert torch.allclose(parts["loss"].detach(), total, rtol=1e-5)


def test_kl_is_zero_when_posterior_equals_prior():
    enc = GaussianConvEncoder(2, 4, (4, 8))
    d = enc(torch.randn(2, 2, 8, 8))
    assert torch.allclose(hand_kl(d, d), torch.zeros(2), atol=1e-6)
    assert torch.allclose(torch.distributions.kl_divergence(d, d), torch.zeros(2), atol=1e-6)


def test_posterior_sees_the_mask():
    _, model = tiny_model()
    images = torch.randn(2, 1, 16, 16)
    m0 = torch.zeros(2, 1, 16, 16)
    m1 = m0.clone()
    m1[:, :, 4:12, 4:12] = 1
    mu0 = model.posterior_of(images, m0).base_dist.loc
    mu1 = model.posterior_of(images, m1).base_dist.loc
    assert not torch.allclose(mu0, mu1)
    assert model.posterior.encoder[0].in_channels == 2  # image + ONE mask


def test_gaussian_is_axis_aligned_independent():
    d = GaussianConvEncoder(1, 5, (4, 8))(torch.randn(3, 1, 8, 8))
    assert isinstance(d, Independent) and isinstance(d.base_dist, Normal)
    assert d.batch_shape == (3,) and d.event_shape == (5,)
    assert (d.base_dist.scale > 0).all()


def test_predict_samples_differ_and_lie_in_unit_interval():
    method, model = tiny_model()
    model.eval()
    with torch.no_grad():  # a wide prior so the samples visibly differ
        model.prior.conv_layer.bias[model.latent_dim:] = 1.0
    pred = method.predict(model, torch.randn(2, 1, 16, 16), n_samples=6)
    s = pred.samples
    assert s.shape == (2, 6, 16, 16) and pred.personalized is None and pred.consensus is None
    assert 0 <= float(s.min()) and float(s.max()) <= 1
    assert (s[:, 1:] - s[:, :1]).abs().amax(dim=(2, 3)).min() > 1e-4  # every sample differs
    with pytest.raises(ValueError, match="n_samples"):
        method.predict(model, torch.randn(2, 1, 16, 16), n_samples=0)


def test_fcomb_broadcast_equals_tiled_concatenation():
    torch.manual_seed(0)
    fc = Fcomb(5, 3, hidden=7, n_hidden=3)
    feats, z = torch.randn(2, 5, 6, 4), torch.randn(2, 4, 3)
    batched = fc(feats, z)  # [B,N,1,H,W]
    assert batched.shape == (2, 4, 1, 6, 4)
    for n in range(4):
        assert torch.allclose(batched[:, n], fc.forward_concat(feats, z[:, n]), atol=1e-5)
    assert torch.allclose(fc(feats, z[:, 0]), fc.forward_concat(feats, z[:, 0]), atol=1e-5)


def test_batched_sampling_equals_one_pass_per_sample():
    _, model = tiny_model()
    model.eval()
    images = torch.randn(2, 1, 16, 16)
    torch.manual_seed(5)
    batched = model.sample_logits(images, 3)
    torch.manual_seed(5)
    z = model.prior(images).sample((3,))  # [N,B,L], the same draw
    feats = model.unet(images)
    loop = torch.stack([model.fcomb.forward_concat(feats, z[n])[:, 0] for n in range(3)], dim=1)
    assert torch.allclose(batched, loop, atol=1e-5)


def test_l2_norm_sum_by_hand():
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 4.0]]))
        lin.bias.fill_(-2.0)
    assert torch.isclose(l2_norm_sum(lin), torch.tensor(7.0))


def test_presets_resolve():
    smp = ProbUNetConfig()
    assert (smp.backbone, smp.latent_dim, smp.beta) == ("smp", 6, 1.0)
    assert smp.resolved_recon_loss() == "gdl" and smp.resolved_prior_filters() == (16, 32, 64, 128, 256)
    kohl = ProbUNetConfig(backbone="kohl")
    assert kohl.resolved_recon_loss() == "bce" and kohl.resolved_prior_filters() == (32, 64, 128, 192)
    assert ProbUNetConfig(backbone="kohl", recon_loss="gdl").resolved_recon_loss() == "gdl"
    with pytest.raises(ValueError, match="latent_dim"):
        ProbUNet(ProbUNetConfig(latent_dim=0))


def test_bce_reconstruction_is_summed_over_pixels():
    method, model = tiny_model()
    images = torch.randn(2, 1, 16, 16)
    masks = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    batch = MultiRaterBatch(images, masks, torch.ones(2, 3, dtype=torch.bool))
    with torch.no_grad():  # Fcomb outputs exactly 0 -> BCE = log 2 per pixel
        model.fcomb.last_layer.weight.zero_()
        model.fcomb.last_layer.bias.zero_()
    recon = method.training_step(model, batch, Stage("train", 1, 1e-3))["recon"]
    assert torch.isclose(recon, torch.tensor(256 * 0.6931471805599453), rtol=1e-5)


@pytest.mark.parametrize("backbone,total,prior,posterior,fcomb", [
    ("smp", 28_366_473, 1_967_724, 1_967_868, 929),
    ("kohl", 4_999_449, 1_367_820, 1_368_108, 3_393),
])
def test_parameter_counts_of_both_presets(backbone, total, prior, posterior, fcomb):
    """1 input channel, 128x128 (counts do not depend on the image size). The smp prior (1,967,724)
    and Fcomb (929) equal D-Persona's reference counts; the posterior has 1 mask channel."""
    model = ProbUNet(ProbUNetConfig(backbone=backbone)).build(INFO1)

    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert (count(model), count(model.prior), count(model.posterior), count(model.fcomb)) == (
        total, prior, posterior, fcomb)
    out = model.eval()(torch.randn(1, 1, 128, 128))
    assert out.shape == (1, 1, 128, 128)


def test_predict_latent_mean_gives_identical_samples_at_the_prior_mean():
    """The control of issue 23: samples forced identical (every z = the prior's mean)."""
    import dataclasses

    _, model = tiny_model()
    model.eval()
    images = torch.randn(2, 1, 16, 16)
    sampled = ProbUNet(KOHL_TINY).predict(model, images, 4).samples
    mean = ProbUNet(dataclasses.replace(KOHL_TINY, predict_latent="mean")).predict(model, images, 4).samples
    assert mean.shape == sampled.shape == (2, 4, 16, 16)
    assert torch.equal(mean, mean[:, :1].expand_as(mean))  # N identical samples
    assert not torch.equal(sampled, sampled[:, :1].expand_as(sampled))
    features, prior = model.encode(images)
    want = torch.sigmoid(model.fcomb(features, prior.mean.unsqueeze(1))[:, :, 0])
    assert torch.allclose(mean[:, :1], want)
