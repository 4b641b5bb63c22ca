"""D-Persona network: parameter counts, batched decoding == plain decoding, stacked heads ==
per-head convs, attention == its definition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mrseg_bench.methods.dpersona import DPersonaConfig, DPersonaNet, dpersona
from mrseg_bench.methods.dpersona.fcomb import Fcomb
from mrseg_bench.methods.dpersona.gaussian import GaussianEncoder
from mrseg_bench.methods.dpersona.heads import ProjectionHeads, attend
from mrseg_bench.types import DatasetInfo


def info(channels: int = 1, raters: int = 4, size: int = 128) -> DatasetInfo:
    return DatasetInfo("t", channels, raters, tuple(f"r{i}" for i in range(raters)), (size, size))


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_net(raters: int = 3, padding: int = 1) -> DPersonaNet:
    return DPersonaNet(1, raters, encoder_name="resnet18", decoder_channels=(32, 16, 16, 16, 16),
                       prior_filters=(8, 16), head_padding=padding)


def test_parameter_counts_reference_one_channel_four_raters():
    faithful = dpersona(DPersonaConfig(faithful_stage2=True)).build(info(1, 4))
    assert faithful.heads.padding == 3
    parts = {"backbone": 24_429_952, "prior": 1_967_724, "posterior": 1_968_300, "fcomb": 929, "heads": 88_128}
    assert {name: count(getattr(faithful, name)) for name in parts} == parts
    assert count(faithful) == 28_455_033
    corrected = dpersona(DPersonaConfig()).build(info(1, 4))
    assert corrected.heads.padding == 1
    # padding changes the maps' sizes, not the kernels: same count with padding-1 heads
    assert count(corrected.heads) == 88_128 and count(corrected) == 28_455_033


def test_parameter_count_three_channels():
    assert count(dpersona(DPersonaConfig(faithful_stage2=True)).build(info(3, 4))) == 28_461_881


def test_head_padding_explicit_overrides_derived():
    assert DPersonaConfig(faithful_stage2=True, head_padding=1).resolved_head_padding == 1
    assert DPersonaConfig(head_padding=3).resolved_head_padding == 3


def test_fcomb_batched_equals_plain_per_sample(seed):
    fcomb = Fcomb(16, 6, 16, 3)
    features, z = torch.randn(2, 16, 9, 7), torch.randn(2, 5, 6)
    batched = fcomb(features, z)
    plain = torch.cat([fcomb.forward_plain(features, z[:, s]) for s in range(5)], dim=1)
    assert batched.shape == (2, 5, 9, 7)
    torch.testing.assert_close(batched, plain, rtol=1e-5, atol=1e-5)


def test_fcomb_cpu_row_tiles_equal_one_pass(seed, monkeypatch):
    import mrseg_bench.methods.dpersona.fcomb as fcomb_module

    fcomb = Fcomb(16, 6, 16, 3)
    features, z = torch.randn(2, 16, 9, 7), torch.randn(2, 5, 6, requires_grad=True)
    whole = fcomb(features, z)
    monkeypatch.setattr(fcomb_module, "CPU_TILE_ELEMENTS", 2 * 5 * 7 * 16 * 2)  # 2-row tiles
    tiled = fcomb(features, z)
    torch.testing.assert_close(tiled, whole)
    g_whole, = torch.autograd.grad(whole.sum(), z)
    g_tiled, = torch.autograd.grad(tiled.sum(), z)
    torch.testing.assert_close(g_tiled, g_whole)


def test_fcomb_plain_is_tile_concat_conv(seed):
    """The plain form by hand: 1x1 convs are matrix products over channels at each pixel."""
    fcomb = Fcomb(4, 2, 3, 2)
    f, z = torch.randn(1, 4, 2, 2), torch.randn(1, 2)
    h = torch.cat([f, z[:, :, None, None].expand(1, 2, 2, 2)], 1).permute(0, 2, 3, 1)  # [1,2,2,6]
    for conv in (fcomb.hidden[0], fcomb.hidden[2]):
        h = torch.relu(h @ conv.weight[:, :, 0, 0].T + conv.bias)
    expected = (h @ fcomb.out.weight[:, :, 0, 0].T + fcomb.out.bias).permute(0, 3, 1, 2)
    torch.testing.assert_close(fcomb.forward_plain(f, z), expected)


def test_fcomb_orthogonal_init():
    fcomb = Fcomb(16, 6, 16, 3)
    w = fcomb.hidden[2].weight[:, :, 0, 0]
    torch.testing.assert_close(w @ w.T, torch.eye(16), atol=1e-5, rtol=0)


@pytest.mark.parametrize("padding", [1, 3])
def test_stacked_heads_equal_separate_heads(seed, padding):
    heads = ProjectionHeads(3, 16, (32, 16, 6), padding=padding).eval()
    x = torch.randn(2, 16, 20, 20)
    q = heads(x)
    assert q.shape == (2, 3, 6) and bool((q >= 0).all())
    for r in range(3):
        h = x
        for j, (w, b) in enumerate(zip(heads.weight, heads.bias, strict=True)):
            if j in (2, 4):
                h = F.avg_pool2d(h, 2)
            h = torch.relu(F.conv2d(h, w[r], b[r], padding=padding))
        torch.testing.assert_close(q[:, r], h.mean((2, 3)), rtol=1e-5, atol=1e-6)


def test_heads_padding_three_grows_maps(monkeypatch):
    """Reference quirk: 3x3 kernels with padding 3 grow each map by 4 pixels per conv."""
    sizes: list[int] = []
    conv2d = F.conv2d

    def recording(*args, **kwargs):
        out = conv2d(*args, **kwargs)
        sizes.append(out.shape[-1])
        return out

    monkeypatch.setattr(F, "conv2d", recording)
    q = ProjectionHeads(2, 16, (32, 16, 6), padding=3).eval()(torch.zeros(1, 16, 128, 128))
    assert q.shape == (1, 2, 6)
    assert sizes == [132, 136, 72, 76, 42, 46]


def test_heads_dropout_only_in_train_mode(seed):
    heads = ProjectionHeads(2, 16, (32, 16, 6), dropout=0.5)
    x = torch.randn(1, 16, 16, 16)
    heads.eval()
    torch.testing.assert_close(heads(x), heads(x))
    heads.train()
    assert not torch.equal(heads(x), heads(x))


def test_attend_is_softmax_weighted_bank(seed):
    q, bank = torch.rand(2, 3, 6), torch.randn(2, 7, 6)
    z = attend(q, bank)
    for b in range(2):
        for r in range(3):
            a = torch.softmax(torch.stack([q[b, r] @ bank[b, i] for i in range(7)]), 0)
            torch.testing.assert_close(z[b, r], (a[:, None] * bank[b]).sum(0))


def test_attend_with_one_bank_sample_returns_it():
    bank = torch.randn(2, 1, 6)
    torch.testing.assert_close(attend(torch.rand(2, 4, 6), bank), bank.expand(2, 4, 6))


def test_gaussian_encoder_shapes_and_ceil_pooling(seed):
    enc = GaussianEncoder(2, 6, (4, 8, 8), convs_per_block=3)
    mu, log_sigma = enc(torch.randn(3, 2, 33, 17))  # odd sizes: ceil_mode pooling
    assert mu.shape == log_sigma.shape == (3, 6)
    dist = enc.distribution(torch.randn(3, 2, 16, 16))
    assert dist.batch_shape == (3,) and dist.event_shape == (6,)
    assert dist.rsample((5,)).shape == (5, 3, 6)
    # layer positions mirror the reference: pools at 6 and 13, convs elsewhere
    kinds = [type(m).__name__ for m in enc.convs]
    assert kinds[6] == kinds[13] == "AvgPool2d" and kinds[7] == "Conv2d" and len(kinds) == 20


def test_personalized_logits_equal_per_rater_plain_decoding(seed):
    net = tiny_net().eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        features = net.backbone(x)
        part = net.fcomb.feature_part(features)
        bank = torch.randn(2, 11, 6)
        out = net.personalized_logits(features, part, bank)
        z = attend(net.heads(features), bank)
        naive = torch.cat([net.fcomb.forward_plain(features, z[:, r]) for r in range(3)], dim=1)
    assert out.shape == (2, 3, 32, 32)
    torch.testing.assert_close(out, naive, rtol=1e-5, atol=1e-5)


def test_forward_bank_and_sample_shapes(seed):
    net = tiny_net(raters=2).eval()
    with torch.no_grad():
        samples, personal = net(torch.randn(3, 1, 32, 32), n_samples=4, bank_size=9)
    assert samples.shape == (3, 4, 32, 32) and personal.shape == (3, 2, 32, 32)
    assert bool(torch.isfinite(samples).all() and torch.isfinite(personal).all())
    # distinct prior samples give distinct maps (the latent reaches the output)
    assert not torch.allclose(samples[:, 0], samples[:, 1])
