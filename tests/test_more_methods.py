"""PHiSeg, MoSE and TAB (issue 15): contract at tiny sizes, method-specific maths, paper sizes."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from mrseg_bench.baselines.mose import PAPER_FILTERS, MoSEModel, expert_assignment, sample_weights
from mrseg_bench.baselines.phiseg import PHiSegModel, gaussian_kl, kl_level_weights, phiseg_channels
from mrseg_bench.baselines.tab import lowrank_sample, sample_nll
from mrseg_bench.method import Stage, create_method
from mrseg_bench.presets import load_preset
from mrseg_bench.registry import METHODS
from mrseg_bench.types import Capability, DatasetInfo, MultiRaterBatch

INFO = DatasetInfo("blobs", 1, 3, ("r0", "r1", "r2"), (32, 32))
TINY = {
    "phiseg": {"n0": 4, "levels": 5, "latent_levels": 3},
    "mose": {"filters": (4, 8, 8), "samples_per_expert": 2},
    "tab": {"encoder_name": "tu-resnet10t", "decoder_channels": (16, 16, 8, 8, 8), "hidden": 16,
            "heads": 2, "ffn": 32, "embed_dim": 8, "train_samples": 3},
}
D, P, C = Capability.DIVERSE, Capability.PERSONALIZED, Capability.CONSENSUS


def batch(b: int = 2, r: int = 3, size: int = 32, seed: int = 0) -> MultiRaterBatch:
    """Random image, disks of radius 5 + 2k for rater k; rater 2 of image 0 invalid."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = torch.randint(10, size - 10, (b, 2), generator=g)
    dist = ((yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2).float().sqrt()
    masks = (dist[:, None] <= (5.0 + 2.0 * torch.arange(r).float())[None, :, None, None]).to(torch.uint8)
    valid = torch.ones(b, r, dtype=torch.bool)
    valid[0, r - 1] = False
    image = (dist <= 7).float()[:, None] + 0.1 * torch.randn(b, 1, size, size, generator=g)
    return MultiRaterBatch(image, masks, valid, [f"c{i}" for i in range(b)], [f"g{i}" for i in range(b)])


@pytest.mark.parametrize("name,caps", [("phiseg", {D}), ("mose", {D}), ("tab", {D, P, C})])
def test_contract_tiny(name, caps):
    torch.manual_seed(0)
    method = create_method(name, TINY[name])
    assert METHODS.get(name)().info.capabilities == caps and method.info.paper
    model = method.build(INFO)
    data = batch()
    model.train()
    parts = method.training_step(model, data, method.stages()[0])
    assert all(v.ndim == 0 and torch.isfinite(v) for v in parts.values())
    parts["loss"].backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.parameters())
    model.eval()
    pred = method.predict(model, data.image, n_samples=5)
    assert pred.capabilities() == caps
    assert pred.samples.shape == (2, 5, 32, 32) and pred.samples.dtype == torch.float32
    for t in (pred.samples, pred.personalized, pred.consensus):
        if t is not None:
            assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0
    if P in caps:
        assert pred.personalized.shape == (2, 3, 32, 32) and pred.consensus.shape == (2, 32, 32)
    if name == "mose":
        assert pred.sample_weights.shape == (2, 5)
        assert torch.allclose(pred.sample_weights.sum(1), torch.ones(2))
    else:
        assert pred.sample_weights is None
    with pytest.raises(ValueError, match="n_samples"):
        method.predict(model, data.image, n_samples=0)


@pytest.mark.parametrize("name", ["phiseg", "mose"])
def test_chunked_prediction_equals_unchunked(name):
    """Chunking N (the memory bound) does not change the samples: the noise is drawn up front."""
    torch.manual_seed(0)
    small = create_method(name, {**TINY[name], "sample_chunk": 2})  # 1 sample x 2 images per chunk
    big = create_method(name, {**TINY[name], "sample_chunk": 1000})
    model = small.build(INFO).eval()
    images = batch().image
    torch.manual_seed(1)
    a = small.predict(model, images, 3)
    torch.manual_seed(1)
    b = big.predict(model, images, 3)
    assert a.samples.shape == (2, 3, 32, 32)
    assert torch.allclose(a.samples, b.samples, atol=1e-6)
    assert not torch.allclose(a.samples[:, 0], a.samples[:, 1])  # the samples differ


@pytest.mark.parametrize("name,preset", [(n, p) for n in ("phiseg", "mose", "tab") for p in ("smoke", "default")])
def test_preset_sizes_build_and_run(name, preset):
    """The smoke preset (32 px) and default preset (64 px) configurations train and predict."""
    p = load_preset(preset)
    size = int(p.dataset["synthetic"]["image_size"])
    method = create_method(name)
    method = create_method(name, p.method_overrides(name, method.cfg))
    info = DatasetInfo("s", 1, 2, ("a", "b"), (size, size))
    model = method.build(info)
    data = batch(2, 2, size)
    loss = method.training_step(model, data, method.stages()[0])["loss"]
    assert torch.isfinite(loss)
    assert method.predict(model.eval(), data.image, 2).samples.shape == (2, 2, size, size)


# --- PHiSeg -------------------------------------------------------------------------------


def test_phiseg_kl_weights_grow_4_to_the_level():
    assert kl_level_weights(5).tolist() == [1.0, 4.0, 16.0, 64.0, 256.0]
    assert kl_level_weights(3, base=2.0).tolist() == [1.0, 2.0, 4.0]
    assert phiseg_channels(32, 7) == (32, 64, 128, 192, 192, 192, 192)
    assert phiseg_channels(8, 5) == (8, 16, 32, 48, 48)


def test_phiseg_loss_is_recon_over_levels_plus_weighted_kl():
    torch.manual_seed(0)
    method = create_method("phiseg", TINY["phiseg"])
    model = method.build(INFO)
    data = batch()
    data.masks[:] = data.masks[:, :1]  # every rater the same, so the drawn rater does not matter
    torch.manual_seed(3)
    parts = method.training_step(model, data, method.stages()[0])
    torch.manual_seed(3)
    torch.multinomial(data.rater_valid.float(), 1)  # the rater draw consumes the same random numbers
    mask = data.masks[:, :1].float()
    acc, kls = model.train_terms(data.image, mask)
    assert len(acc) == 3 and all(a.shape == (2, 1, 32, 32) for a in acc) and kls.shape == (3,)
    recon = sum(torch.nn.functional.binary_cross_entropy_with_logits(a, mask, reduction="sum") / 2 for a in acc)
    kl = kls[0] + 4 * kls[1] + 16 * kls[2]
    assert torch.allclose(parts["kl"], kl, rtol=1e-5) and torch.allclose(parts["recon"], recon, rtol=1e-5)
    assert torch.allclose(parts["loss"], recon + kl, rtol=1e-5)


def test_phiseg_latent_levels_sit_on_the_coarsest_resolutions():
    model = PHiSegModel(1, n0=4, levels=5, latent_levels=3, latent_channels=2)
    feats = model.prior.features(torch.randn(2, 1, 32, 32))
    mus, sigmas, zs = model.prior(feats)
    # 5 resolution levels 32,16,8,4,2; 3 latent levels on the coarsest three: 8, 4, 2
    assert [tuple(z.shape) for z in zs] == [(2, 2, 8, 8), (2, 2, 4, 4), (2, 2, 2, 2)]
    assert all(bool((s > 0).all()) for s in sigmas)


def test_phiseg_gaussian_kl_matches_torch():
    g = torch.Generator().manual_seed(0)
    qm, pm = torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g)
    qs, ps = torch.rand(4, 2, 3, 3, generator=g) + 0.1, torch.rand(4, 2, 3, 3, generator=g) + 0.1
    assert torch.allclose(gaussian_kl(qm, qs, pm, ps), kl_divergence(Normal(qm, qs), Normal(pm, ps)), atol=1e-5)
    assert float(gaussian_kl(qm, qs, qm, qs).abs().max()) < 1e-6


def test_phiseg_rejects_sizes_and_levels():
    with pytest.raises(ValueError, match="divisible"):
        create_method("phiseg", {"levels": 7}).build(INFO)  # 32 px cannot hold 7 levels
    with pytest.raises(ValueError, match="latent_levels"):
        create_method("phiseg", {"levels": 3, "latent_levels": 4})


# --- MoSE ---------------------------------------------------------------------------------


def test_mose_sample_weights_by_hand():
    pi = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    idx, counts = expert_assignment(6, 4)
    assert idx.tolist() == [0, 1, 2, 3, 0, 1] and counts.tolist() == [2, 2, 1, 1]
    _, w = sample_weights(pi, 6)
    assert torch.allclose(w[0], torch.tensor([0.05, 0.1, 0.3, 0.4, 0.05, 0.1]))
    _, w = sample_weights(pi, 2)  # N < K: experts 0 and 1 only, renormalised
    assert torch.allclose(w[0], torch.tensor([0.1, 0.2]) / 0.3)
    _, w = sample_weights(pi, 16)  # the paper's 16 = 4 x 4: pi_k / 4 each
    assert torch.allclose(w[0], pi[0].repeat(4) / 4)


def test_mose_gates_and_experts_receive_gradients():
    torch.manual_seed(0)
    method = create_method("mose", TINY["mose"])
    model = method.build(INFO)
    method.training_step(model, batch(), method.stages()[0])["loss"].backward()
    assert float(model.gate[-1].weight.grad.abs().sum()) > 0  # through the Sinkhorn plan's masses
    assert float(model.expert_mu.grad.abs().sum()) > 0 and float(model.expert_log_sigma.grad.abs().sum()) > 0


def _mose_paper_parameters_by_hand(in_ch: int, filters, k: int = 4, d: int = 1, convs: int = 3) -> int:
    """conv3x3 without bias + BatchNorm (2 per channel); decoder convs see [up, skip]."""
    def block(cin, cout):
        return cin * 9 * cout + (convs - 1) * cout * 9 * cout + convs * 2 * cout
    enc = sum(block(in_ch if i == 0 else filters[i - 1], f) for i, f in enumerate(filters))
    dec = sum(block(filters[i + 1] + filters[i], filters[i]) for i in range(len(filters) - 1))
    fb, f0 = filters[-1], filters[0]
    gate = 2 * (fb * fb + fb) + fb * k
    experts = 2 * k * d
    modulate = 2 * (d * f0 + f0)
    head = 2 * (f0 * f0 + f0) + f0 + 1
    return enc + dec + gate + experts + modulate + head


def test_mose_paper_parameter_count():
    model = MoSEModel(1, PAPER_FILTERS, 4, 1)
    n = sum(p.numel() for p in model.parameters())
    print(f"\nMoSE paper preset (1 channel): {n:,} parameters (published: about 37.3M)")
    assert n == _mose_paper_parameters_by_hand(1, PAPER_FILTERS)
    assert 9.0e6 < n < 9.5e6


def test_paper_parameter_counts_printed():
    """Paper-preset sizes for 1 channel, 4 raters, 128x128 (resnet34 for TAB)."""
    p = load_preset("paper")
    info = DatasetInfo("lidc", 1, 4, ("a", "b", "c", "d"), (128, 128))
    counts = {}
    for name in ("phiseg", "tab"):
        method = create_method(name)
        method = create_method(name, p.method_overrides(name, method.cfg))
        counts[name] = sum(t.numel() for t in method.build(info).parameters())
    print(f"\npaper preset parameters: {counts}")
    assert 15e6 < counts["phiseg"] < 20e6  # phiseg_7_5, n0 = 32: prior + posterior + likelihood
    assert 25e6 < counts["tab"] < 30e6  # smp resnet34 U-Net (24.4M) + transformer layers + heads


# --- TAB ----------------------------------------------------------------------------------


def test_lowrank_sampling_covariance():
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([0.5, -1.0, 2.0])
    factor = torch.randn(3, 2, generator=g)
    diag = torch.tensor([0.3, 0.1, 0.5])
    torch.manual_seed(0)
    x = lowrank_sample(mean, factor, diag, 200_000)  # [N,3]
    cov = torch.cov(x.T)
    assert torch.allclose(x.mean(0), mean, atol=0.02)
    assert torch.allclose(cov, factor @ factor.T + torch.diag(diag), atol=0.03)


def test_lowrank_sampling_is_batched_over_leading_dims():
    mean, factor, diag = torch.zeros(2, 3, 5), torch.zeros(2, 3, 5, 7), torch.full((2, 3, 5), 1e-8)
    out = lowrank_sample(mean, factor, diag, 4)
    assert out.shape == (2, 3, 4, 5) and float(out.abs().max()) < 1e-3


def test_tab_sample_nll_equals_elementwise_bce():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 10, generator=g)
    masks = (torch.rand(2, 4, 10, generator=g) > 0.5).float()
    nll = sample_nll(logits, masks)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[:, :, None].expand(-1, -1, 4, -1), masks[:, None].expand(-1, 3, -1, -1), reduction="none").sum(-1)
    assert nll.shape == (2, 3, 4) and torch.allclose(nll, ref, atol=1e-5)


def test_tab_loss_forms_and_lambda():
    torch.manual_seed(0)
    data = batch()
    for form in ("logmeanexp", "mean"):
        method = create_method("tab", {**TINY["tab"], "loss_form": form, "lam": 0.5})
        model = method.build(INFO)
        parts = method.training_step(model, data, Stage("train", 1, 1e-3))
        assert torch.allclose(parts["loss"], parts["global"] + 0.5 * parts["personal"])
    with pytest.raises(ValueError, match="loss_form"):
        create_method("tab", {"loss_form": "max"})


def test_schedules_reach_the_stage():
    mose = create_method("mose", {"schedule": "plateau", "plateau_patience": 10, "min_lr": 1e-5})
    st = mose.stages()[0]
    assert st.schedule == "plateau" and st.schedule_options == {"factor": 0.5, "patience": 10, "min_lr": 1e-5}
    assert st.weight_decay == 1e-5
    st = create_method("tab").stages()[0]
    assert st.schedule == "poly" and st.schedule_options == {"power": 0.9} and st.lr == 5e-5
    assert create_method("phiseg").stages()[0].schedule == "cosine"
    with pytest.raises(ValueError, match="plateau_factor"):
        create_method("mose", {"plateau_factor": 1.5})


@pytest.mark.parametrize("name,part", [("phiseg", "likelihood"), ("mose", "head"), ("tab", "transformer_decoder")])
def test_prediction_decodes_all_samples_in_one_pass(name, part):
    """No Python loop over samples: N = 10 samples of 2 images go through the decoder once
    (``sample_chunk`` 64 pairs holds all 20), and 4 times with 7 pairs (3 samples) per chunk."""
    method = create_method(name, TINY[name])
    model = method.build(INFO).eval()
    calls = []
    getattr(model, part).register_forward_hook(lambda *a: calls.append(1))
    method.predict(model, batch().image, 10)
    assert len(calls) == 1
    if name != "tab":  # tab's draws are one expression of the output's size: nothing to chunk
        calls.clear()
        create_method(name, {**TINY[name], "sample_chunk": 7}).predict(model, batch().image, 10)
        assert len(calls) == 4  # 3 samples x 2 images per chunk: ceil(10 / 3) chunks
