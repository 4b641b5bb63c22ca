"""cm.global, cm.pixel and pionono: reference parameter counts, hand-computed confusion-matrix
outputs, the degenerate one-class form, the trace schedule as stages, valid-rater masking, the
Pionono latent (KL, draws, batched head), and the rater-selection helper."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import MultivariateNormal, kl_divergence

from mrseg_bench.baselines.cm import WARMUP, noisy_foreground
from mrseg_bench.baselines.common import select_raters
from mrseg_bench.baselines.pionono import PiononoHead, full_gaussian_kl
from mrseg_bench.engine.optim import build_optimizer
from mrseg_bench.method import Stage, create_method
from mrseg_bench.types import DatasetInfo, MultiRaterBatch

TINY = {"encoder_name": "tu-resnet10t", "decoder_channels": (16, 16, 8, 8, 8)}
INFO = DatasetInfo("t", 1, 3, ("a", "b", "c"), (32, 32))
REF = DatasetInfo("ref", 1, 4, ("a", "b", "c", "d"), (128, 128))


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def batch(b: int = 2, r: int = 3, seed: int = 0) -> MultiRaterBatch:
    g = torch.Generator().manual_seed(seed)
    masks = (torch.rand(b, r, 32, 32, generator=g) > 0.6).to(torch.uint8)
    valid = torch.ones(b, r, dtype=torch.bool)
    valid[0, r - 1] = False
    return MultiRaterBatch(torch.randn(b, 1, 32, 32, generator=g), masks, valid)


@pytest.mark.parametrize("name, overrides, expected", [
    ("cm.global", {"classes": 1}, 24_430_101),
    ("cm.pixel", {"classes": 1}, 24_467_557),
    ("pionono", {}, 24_431_217),
])
def test_reference_parameter_counts(name, overrides, expected):
    """ResNet34 (smp, no weights), 1 input channel, 4 raters (REFERENCE.md, 'More methods')."""
    model = create_method(name, {"encoder_name": "resnet34", **overrides}).build(REF)
    assert count(model) == expected
    if name == "pionono":
        assert count(model.latents) == 576 and count(model.head) == 689


def test_noisy_prediction_by_hand():
    p = torch.tensor([0.25, 0.75]).view(1, 2, 1, 1)  # P(bg), P(fg) at one pixel
    a = torch.tensor([[0.9, 0.2], [0.1, 0.8]])  # columns sum to 1
    q = noisy_foreground(p, a.view(1, 1, 2, 2, 1, 1))
    assert q[0, 0, :, 0, 0].tolist() == pytest.approx([0.9 * 0.25 + 0.2 * 0.75, 0.1 * 0.25 + 0.8 * 0.75])


def test_cm_global_init_matrices_and_outputs():
    method = create_method("cm.global", TINY)
    model = method.build(INFO).eval()
    with torch.no_grad():
        p, cms = model(batch().image)
    s1, s0 = math.log1p(math.e), math.log(2.0)  # softplus(1), softplus(0)
    diag = s1 / (s1 + s0)
    assert cms.shape == (1, 3, 2, 2, 1, 1)
    want = torch.tensor([[diag, 1 - diag], [1 - diag, diag]]).expand(3, 2, 2)
    assert torch.allclose(cms[0, :, :, :, 0, 0], want)
    pred = method.predict(model, batch().image, 4)
    fg = p[:, 1]
    assert torch.allclose(pred.consensus, fg)
    assert torch.allclose(pred.personalized, (diag * fg + (1 - diag) * (1 - fg))[:, None].expand(-1, 3, -1, -1))


@pytest.mark.parametrize("name", ["cm.global", "cm.pixel"])
def test_one_class_form_is_degenerate(name):
    """classes=1: every matrix is exactly 1, every rater output equals the backbone's sigmoid."""
    method = create_method(name, {**TINY, "classes": 1})
    model = method.build(INFO).eval()
    p, cms = model(batch().image)
    assert torch.equal(cms, torch.ones_like(cms))
    pred = method.predict(model, batch().image, 4)
    assert torch.equal(pred.personalized, pred.consensus[:, None].expand_as(pred.personalized))
    assert torch.equal(pred.consensus, torch.sigmoid(model.segmentation_head(model.features(batch().image)))[:, 0])
    assert method.resolved_loss() == "gdl"
    assert "degenerate" in method.info.description


def test_cm_pixel_matrices_are_column_stochastic_per_pixel():
    model = create_method("cm.pixel", {**TINY, "pixel_head_channels": 4}).build(INFO).eval()
    _, cms = model(batch().image)
    assert cms.shape == (2, 3, 2, 2, 32, 32) and bool((cms > 0).all())
    assert torch.allclose(cms.sum(dim=2), torch.ones(2, 3, 2, 32, 32))


def test_cm_trace_schedule_stages_and_param_groups():
    method = create_method("cm.pixel", {**TINY, "epochs": 3, "switch_epoch": 2, "lr": 1e-3})
    warm, main = method.stages()
    assert (warm.name, warm.epochs, warm.extra) == (WARMUP, 2, {"trace_sign": -1.0, "cm_lr": 1e-2})
    assert (main.name, main.epochs, main.extra) == ("train", 3, {"trace_sign": 1.0, "cm_lr": 1e-4})
    model = method.build(INFO)
    lrs = {g["name"]: g["lr"] for g in build_optimizer(method, model, warm).param_groups}
    assert lrs == {"unet": 1e-3, "cm": 1e-2}
    lrs = {g["name"]: g["lr"] for g in build_optimizer(method, model, main).param_groups}
    assert lrs == {"unet": 1e-3, "cm": 1e-4}
    # the two stages' losses differ by exactly 2 * trace (maximised, then minimised)
    data = batch()
    a = method.training_step(model, data, warm)
    b = method.training_step(model, data, main)
    assert float((b["loss"] - a["loss"]).detach()) == pytest.approx(2 * float(a["trace"]), rel=1e-5)
    assert float(a["loss"].detach()) == pytest.approx(float(a["recon"] - a["trace"]), rel=1e-5)
    ignore = create_method("cm.global", {"warmup_trace": "ignore"}).stages()[0]
    assert ignore.extra["trace_sign"] == 0.0
    assert [s.name for s in create_method("cm.global", {"switch_epoch": 0}).stages()] == ["train"]
    with pytest.raises(ValueError, match="cm.global: classes"):
        create_method("cm.global", {"classes": 3})


@pytest.mark.parametrize("name", ["cm.global", "cm.pixel", "pionono"])
@pytest.mark.parametrize("mode", ["all", "one"])
def test_invalid_raters_never_enter_the_loss(name, mode):
    method = create_method(name, {**TINY, "recon_raters": mode})
    torch.manual_seed(0)
    model = method.build(INFO)
    model.eval()  # no dropout/batch-stat updates between the two calls
    stage = method.stages()[-1]
    data = batch()
    torch.manual_seed(3)
    ref = method.training_step(model, data, stage)["loss"]
    data.masks[0, 2] = 1 - data.masks[0, 2]  # rater 2 of image 0 is invalid
    torch.manual_seed(3)
    assert torch.equal(method.training_step(model, data, stage)["loss"], ref)
    data.masks[1, 2] = 1 - data.masks[1, 2]  # a valid one does count (with "one" when drawn)
    if mode == "all":
        torch.manual_seed(3)
        assert not torch.equal(method.training_step(model, data, stage)["loss"], ref)


def test_recon_raters_defaults_follow_the_references():
    # Pionono's reference pairs each image with one annotation; Zhang et al.'s CM code uses all
    assert create_method("pionono").cfg.recon_raters == "one"
    assert create_method("cm.global").cfg.recon_raters == "all"
    from mrseg_bench.presets import load_preset

    for preset in ("default", "study", "smoke", "paper"):
        p = load_preset(preset)
        assert p.method_overrides("pionono", create_method("pionono").cfg).get("recon_raters", "one") == "one", preset


def test_select_raters_modes():
    data = batch(b=64)
    data.rater_valid[:, 0] = False
    index, target, valid = select_raters("all", data.masks, data.rater_valid)
    assert index.tolist() == [[0, 1, 2]] * 64 and torch.equal(valid, data.rater_valid)
    assert torch.equal(target, data.masks.float())
    torch.manual_seed(0)
    index, target, valid = select_raters("one", data.masks, data.rater_valid)
    assert index.shape == (64, 1) and bool(valid.all())
    assert set(index.flatten().tolist()) == {1, 2}  # never the invalid rater 0
    assert index[0].tolist() == [1]  # image 0 also lacks rater 2
    assert torch.equal(target[:, 0], data.masks.float()[torch.arange(64), index[:, 0]])
    with pytest.raises(ValueError, match="recon_raters"):
        select_raters("some", data.masks, data.rater_valid)


def test_full_gaussian_kl_matches_torch():
    g = torch.Generator().manual_seed(0)
    mu_q, mu_p = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    lq = torch.tril(torch.randn(4, 3, 3, generator=g)) + 2 * torch.eye(3)
    lp = torch.tril(torch.randn(4, 3, 3, generator=g)) * 0.3 + torch.eye(3)
    want = kl_divergence(MultivariateNormal(mu_q, scale_tril=lq), MultivariateNormal(mu_p, scale_tril=lp))
    assert torch.allclose(full_gaussian_kl(mu_q, lq, mu_p, lp), want, atol=1e-5)
    assert full_gaussian_kl(torch.zeros(3), 2 * torch.eye(3), torch.zeros(3), 2 * torch.eye(3)) == pytest.approx(0.0)


def test_pionono_init_and_latent_group():
    method = create_method("pionono", {**TINY, "lr": 1e-3})
    torch.manual_seed(0)
    model = method.build(INFO)
    lat = model.latents
    assert torch.equal(lat.posterior_tril, 2 * torch.eye(8).expand(3, 8, 8))
    assert torch.equal(lat.prior_tril, 2 * torch.eye(8).expand(3, 8, 8)) and not lat.prior_tril.requires_grad
    assert not lat.prior_mu.requires_grad and bool((lat.prior_mu == 0).all())
    torch.manual_seed(1)
    big = create_method("pionono", {**TINY, "encoder_name": "tu-resnet10t"}).build(
        DatasetInfo("t", 1, 500, tuple(map(str, range(500))), (32, 32)))
    assert float(big.latents.posterior_mu.detach().std()) == pytest.approx(8.0, rel=0.05)  # mu ~ N(0, 8^2)
    for conv in model.head.layers:
        assert bool((conv.bias == 0).all())
    groups = {g["name"]: g for g in build_optimizer(method, model, method.stages()[0]).param_groups}
    assert groups["latent"]["lr"] == 0.02 and groups["unet_head"]["lr"] == 1e-3
    assert {id(p) for p in groups["latent"]["params"]} == {id(lat.posterior_mu), id(lat.posterior_tril)}


def test_pionono_head_equals_concatenation_with_tiled_z():
    torch.manual_seed(0)
    head = PiononoHead(5, 3, 4)
    for conv in head.layers:
        torch.nn.init.normal_(conv.bias)
    feats, z = torch.randn(2, 5, 6, 7), torch.randn(2, 4, 3)
    got = head(feats, z)  # [2,4,6,7]
    for m in range(4):
        x = torch.cat([feats, z[:, m, :, None, None].expand(-1, -1, 6, 7)], dim=1)
        for i, conv in enumerate(head.layers):
            x = conv(x)
            x = F.relu(x) if i < 2 else x
        assert torch.allclose(got[:, m], x[:, 0], atol=1e-5)


def test_pionono_predict_personalised_and_spread_samples():
    """With a (near-)zero covariance every draw of rater r decodes mu_r: then the personalised
    map r and every sample i with i mod R == r coincide."""
    method = create_method("pionono", {**TINY, "predict_draws": 3})
    torch.manual_seed(0)
    model = method.build(INFO).eval()
    with torch.no_grad():
        model.latents.posterior_tril.copy_(1e-8 * torch.eye(8))
    pred = method.predict(model, batch().image, n_samples=7)
    assert pred.samples.shape == (2, 7, 32, 32) and pred.personalized.shape == (2, 3, 32, 32)
    for i in range(7):
        assert torch.allclose(pred.samples[:, i], pred.personalized[:, i % 3], atol=1e-5)
    assert not torch.allclose(pred.personalized[:, 0], pred.personalized[:, 1])
    # with the initial covariance the draws of one rater differ and the personalised map is
    # the sigmoid of their mean, not a single draw
    model2 = method.build(INFO).eval()
    pred2 = method.predict(model2, batch().image, n_samples=6)
    assert not torch.allclose(pred2.samples[:, 0], pred2.samples[:, 3])


def test_pionono_loss_parts():
    method = create_method("pionono", {**TINY, "kl_weight": 0.5, "l2_weight": 0.25, "recon_raters": "all"})
    torch.manual_seed(0)
    model = method.build(INFO)
    out = method.training_step(model, batch(), Stage("train", 1, 1e-3))
    kl = model.latents.kl().detach()  # [3]; valid pairs: image 0 raters 0,1; image 1 raters 0,1,2
    want_kl = (2 * kl[0] + 2 * kl[1] + kl[2]) / 5
    assert float(out["kl"]) == pytest.approx(float(want_kl), rel=1e-5)
    l2 = sum(float(p.detach().norm()) for conv in model.head.layers[:2] for p in conv.parameters())
    assert float(out["l2"]) == pytest.approx(l2, rel=1e-5)
    assert float(out["loss"].detach()) == pytest.approx(float(out["recon"]) + 0.5 * float(want_kl) + 0.25 * l2, rel=1e-5)


def test_presets_reach_the_new_methods():
    from mrseg_bench.run.plan import plan_grid

    paper = {s.method: s.method_obj for s in plan_grid("cm.*,pionono", "synthetic", [0], "paper", device="cpu").specs}
    assert (paper["cm.pixel"].cfg.classes, paper["cm.global"].cfg.encoder_name) == (1, "resnet34")
    assert [s.epochs for s in paper["cm.pixel"].stages()] == [100]
    p = paper["pionono"].cfg
    assert (p.latent_dim, p.latent_lr, p.train_draws, p.predict_draws, p.kl_weight, p.l2_weight, p.lr) == \
        (8, 0.02, 5, 20, 5e-4, 1e-5, 1e-4)
    smoke = plan_grid("cm.*,pionono", "synthetic", [0], "smoke", device="cpu").specs
    for spec in smoke:
        assert spec.method_obj.cfg.encoder_name == "resnet18"
        assert sum(s.epochs for s in spec.method_obj.stages()) <= 2
    default = {s.method: s.method_obj for s in plan_grid("cm.*", "synthetic", [0], "default", device="cpu").specs}
    assert [(s.name, s.epochs) for s in default["cm.global"].stages()] == [("warmup", 1), ("train", 16)]


def test_list_command_shows_new_methods_and_the_degenerate_note():
    from typer.testing import CliRunner

    from mrseg_bench.cli import app

    res = CliRunner().invoke(app, ["list"], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    for needle in ("cm.global", "cm.pixel", "pionono", "Zhang et al.", "Schmidt et al.", "degenerate"):
        assert needle in res.output, needle
