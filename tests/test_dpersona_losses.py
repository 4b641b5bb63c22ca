"""D-Persona losses: rater draw, union/intersection, bound loss, masked GDL, L2 term, stage-1
parts and the ``stage1_recon`` switch."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mrseg_bench.losses import generalised_dice_loss
from mrseg_bench.methods.dpersona import DPersonaNet
from mrseg_bench.methods.dpersona.losses import (
    bound_loss,
    draw_rater,
    l2_penalty,
    masked_generalised_dice_loss,
    stage1_losses,
    stage2_losses,
    union_intersection,
)


def tiny_net(raters: int = 3) -> DPersonaNet:
    return DPersonaNet(1, raters, encoder_name="resnet18", decoder_channels=(32, 16, 16, 16, 16),
                       prior_filters=(8, 16))


@pytest.fixture(scope="module")
def net() -> DPersonaNet:
    torch.manual_seed(0)
    return tiny_net()


def batch(b: int = 2, r: int = 3, size: int = 32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 1, size, size, generator=g), (torch.rand(b, r, size, size, generator=g) > 0.6).float()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=4, max_size=4).filter(any), min_size=1, max_size=6),
       st.integers(0, 2**31 - 1))
def test_draw_rater_picks_a_valid_rater_shared_when_possible(rows, seed):
    valid = torch.tensor(rows)
    torch.manual_seed(seed)
    r = draw_rater(valid)
    assert r.shape == (len(rows),)
    assert bool(valid[torch.arange(len(rows)), r].all())
    if bool(valid.all(0).any()):  # a rater valid for everyone: one rater for the whole batch
        assert len(set(r.tolist())) == 1 and bool(valid[:, r[0]].all())


def test_draw_rater_is_uniform_over_valid_raters(seed):
    valid = torch.tensor([[True, False, True, True]] * 2)
    counts = torch.bincount(torch.stack([draw_rater(valid)[0] for _ in range(3000)]), minlength=4)
    assert counts[1] == 0
    freq = counts[[0, 2, 3]].float() / 3000
    assert bool((freq - 1 / 3).abs().max() < 0.04)


def test_union_intersection_by_hand_ignores_invalid_raters():
    masks = torch.tensor([[[[1.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]]]])  # [1,3,1,3]
    out = union_intersection(masks, torch.tensor([[True, True, False]]))
    torch.testing.assert_close(out, torch.tensor([[[[1.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]]]]))
    out = union_intersection(masks, torch.tensor([[True, True, True]]))
    torch.testing.assert_close(out, torch.tensor([[[[1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0]]]]))


def test_bound_loss_uses_max_and_min_over_samples_by_hand():
    # K = 3 samples, 1 image, 1x2 pixels
    s = torch.tensor([[[[0.0, -2.0]], [[3.0, 1.0]], [[-1.0, 2.0]]]])
    masks = torch.tensor([[[[1.0, 1.0]], [[1.0, 0.0]]]])  # union [1,1], intersection [1,0]
    p_max = torch.sigmoid(torch.tensor([3.0, 2.0]))
    p_min = torch.sigmoid(torch.tensor([-1.0, -2.0]))
    dice_union = 2 * (p_max * torch.tensor([1.0, 1.0])).sum() / (p_max.sum() + 2)
    dice_inter = 2 * (p_min * torch.tensor([1.0, 0.0])).sum() / (p_min.sum() + 1)
    expected = 1 - (dice_union + dice_inter) / 2
    torch.testing.assert_close(bound_loss(s, masks, torch.tensor([[True, True]])), expected)


def test_masked_gdl_equals_reference_gdl_when_all_valid(seed):
    logits, target = torch.randn(3, 4, 8, 8), (torch.rand(3, 4, 8, 8) > 0.5).float()
    valid = torch.ones(3, 4, dtype=torch.bool)
    torch.testing.assert_close(masked_generalised_dice_loss(logits, target, valid),
                               generalised_dice_loss(logits, target))
    # single channel: the background channel is added as in the reference
    torch.testing.assert_close(masked_generalised_dice_loss(logits[:, :1], target[:, :1], valid[:, :1]),
                               generalised_dice_loss(logits[:, :1], target[:, :1]))


def test_masked_gdl_ignores_invalid_entries(seed):
    logits, target = torch.randn(2, 3, 8, 8), (torch.rand(2, 3, 8, 8) > 0.5).float()
    valid = torch.tensor([[True, False, True], [True, False, False]])
    base = masked_generalised_dice_loss(logits, target, valid)
    changed = logits.clone()
    changed[0, 1], changed[1, 2] = 50.0, -50.0
    changed_target = target.clone()
    changed_target[0, 1] = 1 - changed_target[0, 1]
    torch.testing.assert_close(masked_generalised_dice_loss(changed, changed_target, valid), base)
    # rater 1 is missing everywhere: the mean runs over raters 0 (both images) and 2 (image 0)
    p, t = torch.sigmoid(logits), target
    d0 = 2 * (p[:, 0] * t[:, 0]).sum() / (p[:, 0] + t[:, 0]).sum()
    d2 = 2 * (p[0, 2] * t[0, 2]).sum() / (p[0, 2] + t[0, 2]).sum()
    expected = 1 - (d0 + d2) / 2
    torch.testing.assert_close(base, expected)


def test_l2_penalty_sums_unsquared_norms_of_prior_posterior_fcomb_hidden(net):
    params = net.regularised_parameters()
    # 2 nets x (2 blocks x 3 convs + output conv) x (weight, bias) + 3 Fcomb hidden convs x 2
    assert len(params) == 2 * 7 * 2 + 6
    assert all(any(p is q for q in net.fcomb.hidden.parameters()) for p in params[-6:])
    assert not any(p is q for p in params for q in net.fcomb.out.parameters())
    expected = sum(torch.sqrt((p.detach() ** 2).sum()) for p in params)
    torch.testing.assert_close(l2_penalty(net).detach(), expected)


def test_stage1_parts_finite_and_combined(net, seed):
    images, masks = batch()
    valid = torch.ones(2, 3, dtype=torch.bool)
    out = stage1_losses(net, images, masks, valid, beta=0.5, kl_weight=1.0, l2_weight=1e-5, bound_samples=4)
    assert set(out) == {"loss", "rec", "kl", "bound", "l2"}
    assert all(bool(torch.isfinite(v)) for v in out.values())
    out = {k: v.detach() for k, v in out.items()}
    assert 0 <= float(out["rec"]) <= 1 and 0 <= float(out["bound"]) <= 1 and float(out["kl"]) >= 0
    torch.testing.assert_close(out["loss"], out["rec"] + out["kl"] + 0.5 * out["bound"] + 1e-5 * out["l2"])


def test_stage1_bound_term_is_max_min_of_k_decoded_samples(net, seed):
    images, masks = batch()
    valid = torch.tensor([[True, True, False], [True, True, True]])
    decoded = []
    original = net.fcomb.decode

    def recording(part, z):
        out = original(part, z)
        decoded.append(out)
        return out

    net.fcomb.decode = recording
    try:
        out = stage1_losses(net, images, masks, valid, bound_samples=5)
    finally:
        del net.fcomb.decode
    assert [d.shape[1] for d in decoded] == [1, 5]  # reconstruction, then K = 5 bound samples
    s = decoded[1]
    target = torch.stack([torch.stack([masks[0, :2].amax(0), masks[0, :2].amin(0)]),
                          torch.stack([masks[1].amax(0), masks[1].amin(0)])])
    expected = generalised_dice_loss(torch.stack([s.amax(1), s.amin(1)], 1), target)
    torch.testing.assert_close(out["bound"], expected)
    assert not torch.allclose(s[:, 0], s[:, 1])  # K distinct samples


@pytest.mark.parametrize("recon", ["posterior", "prior"])
def test_stage1_recon_switch_routes_reconstruction_gradient(net, seed, recon):
    images, masks = batch()
    out = stage1_losses(net, images, masks, torch.ones(2, 3, dtype=torch.bool), recon=recon, bound_samples=2)
    post = torch.autograd.grad(out["rec"], list(net.posterior.parameters()), allow_unused=True, retain_graph=True)
    prior = torch.autograd.grad(out["rec"], list(net.prior.parameters()), allow_unused=True)
    reached_post = any(g is not None and bool(g.abs().sum() > 0) for g in post)
    reached_prior = any(g is not None and bool(g.abs().sum() > 0) for g in prior)
    assert (reached_post, reached_prior) == ((True, False) if recon == "posterior" else (False, True))


def test_stage2_no_gradient_into_frozen_parts_by_default(net, seed):
    images, masks = batch()
    out = stage2_losses(net, images, masks, torch.ones(2, 3, dtype=torch.bool), bank_size=7)
    grads = torch.autograd.grad(out["loss"], [*net.heads.parameters(), *net.prior.parameters(),
                                              *net.backbone.parameters(), *net.fcomb.parameters()],
                                allow_unused=True, materialize_grads=False)
    n_heads = len(list(net.heads.parameters()))
    assert all(g is not None for g in grads[:n_heads])
    n_prior_backbone = len(list(net.prior.parameters())) + len(list(net.backbone.parameters()))
    assert all(g is None for g in grads[n_heads:n_heads + n_prior_backbone])
