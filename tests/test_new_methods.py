"""SSN, Flow-SSN and CCDM: published parameter counts, the maths of each (hand-checkable cases),
the CCDM schedule, a falling loss on a tiny problem and samples that differ."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_baselines_methods import INFO, blobs, tiny  # noqa: E402 - tests/ is on sys.path

from mrseg_bench.baselines.adm_unet import ADMUNet
from mrseg_bench.baselines.ccdm import (
    CategoricalSchedule,
    CCDMModel,
    categorical_kl,
    sample_onehot,
    sample_times,
)
from mrseg_bench.baselines.flow_ssn import FlowSSNModel, euler_sample, flow_log_likelihood
from mrseg_bench.baselines.ssn import SSNModel, draw_logits, mc_log_likelihood
from mrseg_bench.method import Stage, create_method
from mrseg_bench.presets import load_preset

STAGE = Stage("train", epochs=1, lr=1e-3)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- parameter counts of the `paper` preset ----------------------------------------------------
def bn_unet_count(c_in: int, filters: list[int], convs: int = 3) -> int:
    """conv3x3 (no bias) + BN (2 per channel) per layer; down level i: c_{i-1} -> f_i, then
    f_i -> f_i; up level i: f_{i+1} + f_i -> f_i, then f_i -> f_i."""
    def layer(a: int, b: int) -> int:
        return 9 * a * b + 2 * b
    n = 0
    for i, f in enumerate(filters):
        n += layer(c_in if i == 0 else filters[i - 1], f) + (convs - 1) * layer(f, f)
    for i in range(len(filters) - 1):
        n += layer(filters[i + 1] + filters[i], filters[i]) + (convs - 1) * layer(filters[i], filters[i])
    return n


def adm_count(c_in: int, c_out: int, ch: int, mult: list[int], rb: int, attn: set[int], timed: bool) -> int:
    """The ADM layout by formula: GroupNorm 2c; conv3 9ab + b; ResBlock(a -> b) = GN(a) + conv3(a,b)
    [+ Linear(4ch, b)] + GN(b) + conv3(b,b) [+ 1x1 skip ab + b]; attention(c) = GN + 3c^2 + 3c +
    c^2 + c; stride-2 / upsampling convs conv3(c, c)."""
    e = 4 * ch if timed else 0

    def conv3(a, b):
        return 9 * a * b + b

    def res(a, b):
        return 2 * a + conv3(a, b) + (e * b + b if timed else 0) + 2 * b + conv3(b, b) + (a * b + b if a != b else 0)

    def att(c):
        return 2 * c + 3 * c * c + 3 * c + c * c + c

    n = (ch * e + e + e * e + e) if timed else 0
    n += conv3(c_in, ch)
    skips, cur, ds = [ch], ch, 1
    for lvl, m in enumerate(mult):
        for _ in range(rb):
            n += res(cur, ch * m) + (att(ch * m) if ds in attn else 0)
            cur = ch * m
            skips.append(cur)
        if lvl < len(mult) - 1:
            n += conv3(cur, cur)
            skips.append(cur)
            ds *= 2
    n += 2 * res(cur, cur) + (att(cur) if attn else 0)
    for lvl, m in reversed(list(enumerate(mult))):
        for i in range(rb + 1):
            n += res(cur + skips.pop(), ch * m) + (att(ch * m) if ds in attn else 0)
            cur = ch * m
            if lvl > 0 and i == rb:
                n += conv3(cur, cur)
                ds //= 2
    return n + 2 * cur + conv3(cur, c_out)


def paper_model(name: str):
    method = create_method(name, load_preset("paper").method_overrides(name, create_method(name).cfg))
    info = INFO.__class__("lidc", 1, 4, ("r0", "r1", "r2", "r3"), (128, 128))
    return method, method.build(info)


def test_ssn_paper_parameter_count():
    _, model = paper_model("ssn")
    unet = bn_unet_count(1, [32, 64, 128, 192, 192, 192, 192])
    head = 3 * (32 * 32 + 2 * 32)  # three 1x1 conv (no bias) + BN, 32 channels
    heads = (32 + 1) * (2 + 2 + 2 * 10)  # mu (K), log d (K), P (K x rank 10), with biases
    assert (unet, head, heads) == (9_236_256, 3_264, 792)
    assert count(model) == unet + head + heads == 9_240_312  # REFERENCE.md: "about 10M" (estimate)


def test_flow_ssn_paper_parameter_count():
    _, model = paper_model("flow_ssn")
    base = adm_count(1, 4, 32, [1, 2, 4, 8], 1, set(), False)
    flow = adm_count(2, 2, 16, [1, 1, 1], 1, set(), True)
    assert (count(model.base), count(model.flow)) == (base, flow) == (9_399_716, 95_522)
    assert count(model) == 9_495_238  # REFERENCE.md: "roughly 11M + 0.1M (estimated; UNVERIFIED)"


def test_ccdm_paper_parameter_count_is_the_published_5_7m():
    method, model = paper_model("ccdm")
    n = count(model)
    assert n == adm_count(3, 2, 32, [1, 1, 2, 3, 4], 2, {8, 16}, True) == 5_699_138
    assert abs(n - 5.7e6) / 5.7e6 < 1e-3
    assert (method.cfg.diffusion_steps, method.cfg.sample_steps) == (250, 250)


# ---- SSN --------------------------------------------------------------------------------------
def test_ssn_draws_have_the_low_rank_plus_diagonal_covariance():
    torch.manual_seed(0)
    mu = torch.tensor([[[[1.0]], [[-1.0]]]])  # B=1, K=2, 1x1 pixel: D = 2
    factor = torch.tensor([[[[[2.0]]], [[[1.0]]]]])  # [1,K=2,rank=1,1,1]: P = (2, 1)^T
    diag = torch.tensor([[[[0.5]], [[0.25]]]])
    x = draw_logits(mu, diag, factor, 200_000)[0].reshape(-1, 2)
    # Cov = P P^T + diag(d) = [[4 + .5, 2], [2, 1 + .25]]
    assert torch.allclose(x.mean(0), torch.tensor([1.0, -1.0]), atol=0.02)
    assert torch.allclose(torch.cov(x.T), torch.tensor([[4.5, 2.0], [2.0, 1.25]]), atol=0.05)


def test_ssn_mc_log_likelihood_by_hand():
    # two pixels, K = 2, M = 2 draws with logits (0, 0) and (0, log 3) at every pixel, target fg:
    # draw 1: log softmax = log(1/2) per pixel -> l_1 = 2 log(1/2); draw 2: log(3/4) -> l_2 = 2 log(3/4)
    logits = torch.zeros(1, 2, 2, 1, 2)
    logits[0, 1, 1] = math.log(3.0)
    got = mc_log_likelihood(logits, torch.ones(1, 1, 2, dtype=torch.long))
    want = math.log((0.25 + 0.5625) / 2)  # log mean(exp l_m) = log((1/4 + 9/16) / 2)
    assert got.item() == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("log_d", [-40.0, 40.0])
def test_ssn_loss_is_finite_for_tiny_or_huge_diagonal(log_d):
    """No Cholesky is built: extreme d (where LowRankMultivariateNormal fails) still trains."""
    method = tiny("ssn")
    model = method.build(INFO)
    with torch.no_grad():
        model.log_diag.weight.zero_()
        model.log_diag.bias.fill_(log_d)
    loss = method.training_step(model, blobs(), STAGE)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_ssn_log_diag_clamp():
    model = SSNModel(1, (4, 8), rank=2, head_width=4, log_diag_max=0.0)
    with torch.no_grad():
        model.log_diag.bias.fill_(50.0)
    _, diag, _ = model.distribution(torch.randn(1, 1, 8, 8))
    assert torch.allclose(diag, torch.full_like(diag, 1.0 + 1e-5))


# ---- Flow-SSN ---------------------------------------------------------------------------------
def test_flow_ssn_loss_with_one_draw_is_cross_entropy_of_the_flow_at_z_t():
    torch.manual_seed(0)
    model = FlowSSNModel(1, 4, (1, 2), 4, (1, 1), dropout=0.0).eval()
    mu, sigma = torch.randn(2, 2, 8, 8), torch.ones(2, 2, 8, 8)
    target = (torch.rand(2, 8, 8) > 0.5).long()
    torch.manual_seed(3)
    got = flow_log_likelihood(model, mu, sigma, target, 1)
    torch.manual_seed(3)  # the same eps and t, by hand
    u = mu[:, None] + torch.randn(2, 1, 2, 8, 8)
    t = torch.rand(2, 1)
    z = (1 - t)[..., None, None, None] * u + t[..., None, None, None] * F.one_hot(target, 2).permute(0, 3, 1, 2)[:, None]
    logits = model.velocity_logits(z[:, 0], t[:, 0])
    want = -F.cross_entropy(logits, target, reduction="none").mean(dim=(1, 2))
    assert torch.allclose(got, want, atol=1e-5)


def test_flow_ssn_euler_renormalises_and_ties_give_one_over_k():
    class Const(torch.nn.Module):  # v = 0 logits: softmax = (1/2, 1/2), dz/dt = 1/2 - u
        def velocity_logits(self, z, t):
            return torch.zeros_like(z)

    u = torch.tensor([[[[0.0, 2.0]], [[1.0, 2.0]]]])  # two pixels: (0, 1) and a tie (2, 2)
    z1 = euler_sample(Const(), u, steps=4)
    # z_1 = u + (1/2 - u) = 1/2 per class for this exact Euler path, so every pixel ties: 1/K
    assert torch.allclose(z1, torch.full_like(z1, 0.5))
    u = torch.tensor([[[[0.0]], [[3.0]]]])

    class Push(torch.nn.Module):  # softmax ~ one-hot on class 1
        def velocity_logits(self, z, t):
            return torch.tensor([-50.0, 50.0])[None, :, None, None].expand_as(z)

    z1 = euler_sample(Push(), u, steps=2)  # z_1 = u + (e_1 - u) = (0, 1): shares (0, 1)
    assert torch.allclose(z1[0, :, 0, 0], torch.tensor([0.0, 1.0]), atol=1e-6)


# ---- CCDM -------------------------------------------------------------------------------------
def test_ccdm_schedule_composed_one_step_kernels_reproduce_q_xt_x0():
    sched = CategoricalSchedule(250)
    assert sched.abar[0].item() == 1.0 and sched.abar[-1].item() < 1e-4
    k = 2
    x0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    dist = x0.clone()
    for t in range(1, 251):  # one-step matrices Q_t = alpha_t I + (1 - alpha_t)/K 11^T
        alpha = sched.abar[t] / sched.abar[t - 1]
        dist = alpha * dist + (1 - alpha) / k
        if t in (1, 17, 125, 250):
            assert torch.allclose(dist, sched.abar[t] * x0 + (1 - sched.abar[t]) / k, atol=1e-12), t
    # a jump t -> s with alpha_{t|s} = abar_t / abar_s composes the same way
    jump = sched.abar[40] * x0 + (1 - sched.abar[40]) / k
    a = sched.abar[100] / sched.abar[40]
    assert torch.allclose(a * jump + (1 - a) / k, sched.abar[100] * x0 + (1 - sched.abar[100]) / k, atol=1e-12)


def test_ccdm_posterior_rows_sum_to_one_and_match_bayes_by_hand():
    sched = CategoricalSchedule(10)
    xt = torch.tensor([0.0, 1.0])[None, :, None, None]
    x0 = torch.tensor([1.0, 0.0])[None, :, None, None]
    t, s = torch.tensor([5]), torch.tensor([2])
    post = sched.posterior(xt, x0, t, s)
    a_t, a_s = sched.abar[5].item(), sched.abar[2].item()
    alpha = a_t / a_s
    # x_s = 0: q(x_t=1 | x_s=0) q(x_s=0 | x0=0) = (1 - alpha)/2 * (a_s + (1 - a_s)/2)
    # x_s = 1: (alpha + (1 - alpha)/2) * (1 - a_s)/2
    w0, w1 = (1 - alpha) / 2 * (a_s + (1 - a_s) / 2), (alpha + (1 - alpha) / 2) * (1 - a_s) / 2
    assert torch.allclose(post[0, :, 0, 0], torch.tensor([w0, w1]) / (w0 + w1), atol=1e-6)
    phat = torch.tensor([0.3, 0.7])[None, :, None, None]
    p = sched.model_posterior(xt, phat, t, s)
    assert torch.allclose(p.sum(1), torch.ones(1, 1, 1), atol=1e-6)
    want = 0.3 * post + 0.7 * sched.posterior(xt, torch.tensor([0.0, 1.0])[None, :, None, None], t, s)
    assert torch.allclose(p, want, atol=1e-6)


def test_ccdm_kl_nonnegative_and_t1_loss_is_cross_entropy():
    torch.manual_seed(0)
    q = torch.softmax(torch.randn(4, 2, 5, 5), 1)
    p = torch.softmax(torch.randn(4, 2, 5, 5), 1)
    assert (categorical_kl(q, p) >= -1e-7).all() and categorical_kl(q, q).abs().max() < 1e-6
    method = tiny("ccdm")
    model = method.build(INFO).eval()
    batch = blobs()
    x0 = F.one_hot(batch.masks[:, 0].long(), 2).permute(0, 3, 1, 2).float()
    t = torch.ones(2, dtype=torch.long)
    torch.manual_seed(5)
    loss = method.loss_at(model, batch.image, x0, t)
    torch.manual_seed(5)  # the same x_1 draw, then the cross-entropy of phat against x0
    xt = sample_onehot(method.schedule.q_xt_x0(x0, t))
    ce = F.cross_entropy(model(xt, batch.image, t.float()), batch.masks[:, 0].long(), reduction="none")
    assert loss.item() == pytest.approx(ce.flatten(1).sum(1).mean().item(), rel=1e-5)


def test_ccdm_sample_times_and_onehot_draws():
    assert sample_times(250, 250) == list(range(250, 0, -1))
    assert sample_times(4, 250) == [250, 167, 84, 1]
    assert sample_times(1, 250) == [250]
    torch.manual_seed(0)
    probs = torch.tensor([0.2, 0.8])[None, :, None, None].expand(1, 2, 200, 200)
    draws = sample_onehot(probs)
    assert torch.equal(draws.sum(1), torch.ones(1, 200, 200))
    assert draws[:, 1].mean().item() == pytest.approx(0.8, abs=0.01)


def test_ccdm_tiny_sampler_runs_every_step_count_and_rejects_too_many():
    method = tiny("ccdm")
    model = method.build(INFO).eval()
    for steps in (1, 2, 20):
        out = method.predict(model, blobs().image, 3, sample_steps=steps).samples
        assert out.shape == (2, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ValueError, match="sample_steps"):
        create_method("ccdm", {"diffusion_steps": 10, "sample_steps": 11})


def test_ccdm_model_traces_with_the_image_alone():
    model = CCDMModel(1, 4, (1, 2), 1, (), 4)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 2, 8, 8)


def test_adm_unet_rejects_bad_sizes():
    with pytest.raises(ValueError, match="divisible"):
        ADMUNet(1, 1, 4, (1, 2, 2), 1)(torch.randn(1, 1, 6, 6))
    with pytest.raises(ValueError, match="res_blocks"):
        ADMUNet(1, 1, 4, (1,), 0)


# ---- training and sampling on a tiny problem ----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["ssn", "flow_ssn", "ccdm"])
def test_loss_falls_and_samples_differ(name):
    torch.manual_seed(0)
    method = tiny(name)
    model = method.build(INFO)
    model.train()
    batch = blobs(b=4, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = method.training_step(model, batch, STAGE)["loss"]
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, losses
    model.eval()
    samples = method.predict(model, batch.image, 6).samples > 0.5  # [B,6,H,W]
    differ = (samples != samples[:, :1]).flatten(2).any(-1)  # sample i vs sample 0, per image
    assert bool(differ.any()), f"{name}: all 6 samples identical"


def test_ccdm_profile_rows_time_per_sample_at_preset_and_published_steps():
    from mrseg_bench.engine.profile import _extra_rows
    from mrseg_bench.reports.columns import cost_table, label

    method = tiny("ccdm")  # diffusion_steps 20 (the "published" count is capped at T), sample_steps 3
    steps_seen = []
    predict = method.predict
    method.predict = lambda *a, **k: steps_seen.append(k["sample_steps"]) or predict(*a, **k)
    rows = {r["name"]: r for r in _extra_rows(method, method.build(INFO).eval(), blobs().image, 2,
                                               torch.device("cpu"), "fp32")}
    assert steps_seen == [3, 20]
    for key in ("sample_ms", "sample_ms_published_steps"):
        assert rows[key]["unit"] == "ms/sample" and rows[key]["value"] > 0
        assert cost_table(key) == "cost_detail" and "ms" in label(key)
    assert _extra_rows(tiny("ssn"), None, blobs().image, 2, torch.device("cpu"), "fp32") == []


@pytest.mark.slow
def test_profile_method_includes_the_method_rows():
    from mrseg_bench.engine.profile import profile_method

    method = tiny("ccdm", sample_steps=1, diffusion_steps=2)
    rows = profile_method(method, method.build(INFO), blobs(), torch.device("cpu"), 1, train=False,
                          warmup=0, steps=1, repeats=1, memory="off")
    assert {"sample_ms", "sample_ms_published_steps"} <= {r["name"] for r in rows}
