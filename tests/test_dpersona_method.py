"""D-Persona as a Method: registry and config, stages and freezing, stage 2 touches only the
heads, predict, loud failure on NaN, and a tiny training that lowers each stage's loss."""

from __future__ import annotations

import math

import pytest
import torch

from mrseg_bench.method import create_method
from mrseg_bench.methods.dpersona import DPersona, DPersonaConfig, DPersonaNet
from mrseg_bench.registry import METHODS
from mrseg_bench.types import Capability, DatasetInfo, MultiRaterBatch

TINY = {"encoder_name": "resnet18", "decoder_channels": "32,16,16,16,16", "prior_filters": "8,16",
        "bank_train": 16, "bank_test": 24, "bound_samples": 4}


def tiny(**overrides) -> tuple[DPersona, DPersonaNet]:
    method = create_method("dpersona", {**TINY, **overrides})
    info = DatasetInfo("blobs", 1, 3, ("a", "b", "c"), (32, 32))
    return method, method.build(info)


def blobs(n: int, seed: int, size: int = 32) -> MultiRaterBatch:
    """A bright disc per image; rater r draws it with radius 4 + 2r (a rater-specific style)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.randint(10, size - 10, (n, 2), generator=g).float()
    dist = ((yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2).sqrt()
    image = (dist < 6).float() + 0.3 * torch.randn(n, size, size, generator=g)
    radii = torch.tensor([4.0, 6.0, 8.0])
    masks = (dist[:, None] < radii[None, :, None, None]).to(torch.uint8)
    return MultiRaterBatch(image[:, None], masks, torch.ones(n, 3, dtype=torch.bool))


def test_registered_with_capabilities_and_config():
    assert "dpersona" in METHODS.names()
    method = METHODS.get("dpersona")()
    assert method.info.capabilities == frozenset({Capability.DIVERSE, Capability.PERSONALIZED})
    assert method.info.config_cls is DPersonaConfig
    c = method.cfg
    assert (c.latent_dim, c.beta, c.bound_samples, c.bank_train, c.bank_test, c.lr, c.l2_weight) == (
        6, 0.5, 10, 100, 500, 1e-4, 1e-5)
    assert c.stage1_recon == "posterior" and c.faithful_stage2 is False and c.encoder_weights is None


def test_overrides_are_typed_and_validated():
    m = create_method("dpersona", {"stage1_recon": "prior", "faithful_stage2": "true", "latent_dim": "4",
                                   "decoder_channels": "[64,32,16,16,8]"})
    assert m.cfg.stage1_recon == "prior" and m.cfg.faithful_stage2 is True and m.cfg.latent_dim == 4
    assert m.cfg.decoder_channels == (64, 32, 16, 16, 8) and m.cfg.resolved_head_padding == 3
    with pytest.raises(ValueError, match="stage1_recon"):
        create_method("dpersona", {"stage1_recon": "both"})
    with pytest.raises(ValueError, match="bank_test"):
        DPersonaConfig(bank_test=0)
    with pytest.raises(ValueError, match="head_dropout"):
        DPersonaConfig(head_dropout=1.0)
    with pytest.raises(ValueError, match="unknown key"):
        create_method("dpersona", {"latent": 3})


def test_stages_epochs_lr_and_parameter_split():
    method, net = tiny(epochs=7, stage2_epochs=3, lr=2e-4)
    s1, s2 = method.stages()
    assert (s1.name, s1.epochs, s1.lr, s1.monitor, s1.mode) == ("stage1", 7, 2e-4, "loss", "min")
    assert (s2.name, s2.epochs, s2.lr) == ("stage2", 3, 2e-4)
    heads = {id(p) for p in net.heads.parameters()}
    p1 = {id(p) for p in method.stage_parameters(net, s1)}
    p2 = {id(p) for p in method.stage_parameters(net, s2)}
    assert p2 == heads and not (p1 & heads) and p1 | p2 == {id(p) for p in net.parameters()}
    method.begin_stage(net, s1)
    assert all(p.requires_grad == (id(p) not in heads) for p in net.parameters())
    method.begin_stage(net, s2)
    assert all(p.requires_grad == (id(p) in heads) for p in net.parameters())
    method.train_mode(net, s2)
    assert net.heads.training and not net.backbone.training and not net.prior.training


def snapshot(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def one_step(method: DPersona, net: DPersonaNet, stage, batch: MultiRaterBatch) -> None:
    method.begin_stage(net, stage)
    method.train_mode(net, stage)
    opt = torch.optim.Adam(method.stage_parameters(net, stage), lr=1e-2)
    opt.zero_grad()
    method.training_step(net, batch, stage)["loss"].backward()
    opt.step()


def test_stage2_changes_only_head_tensors_by_default(seed):
    method, net = tiny()
    batch = blobs(4, seed=0)
    one_step(method, net, method.stages()[0], batch)  # BN stats and weights move in stage 1
    before = snapshot(net)
    one_step(method, net, method.stages()[1], batch)
    after = snapshot(net)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("heads.") for k in changed)
    assert {k for k in before if k.startswith("heads.")} == changed  # every head tensor moved


def test_faithful_stage2_drifts_batchnorm_but_steps_only_heads(seed):
    method, net = tiny(faithful_stage2=True)
    assert net.heads.padding == 3
    s2 = method.stages()[1]
    before = snapshot(net)
    one_step(method, net, s2, blobs(4, seed=0))
    after = snapshot(net)
    assert net.backbone.training  # the reference keeps the whole net in train mode
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.endswith("running_mean") for k in changed)
    params = {k for k, _ in net.named_parameters()}
    assert {k for k in changed if k in params} == {k for k in params if k.startswith("heads.")}
    # autograd ran through the frozen backbone (they keep requires_grad, as in the reference)
    assert any(p.grad is not None for p in net.backbone.parameters())


def test_predict_returns_samples_and_personalized_probabilities(seed):
    method, net = tiny()
    net.train()
    pred = method.predict(net, blobs(2, seed=3).image, n_samples=5)
    assert net.training  # mode restored
    assert pred.capabilities() == method.info.capabilities
    assert pred.samples.shape == (2, 5, 32, 32) and pred.personalized.shape == (2, 3, 32, 32)
    for t in (pred.samples, pred.personalized):
        assert bool(((t >= 0) & (t <= 1)).all())
    with pytest.raises(ValueError, match="n_samples"):
        method.predict(net, blobs(1, seed=3).image, n_samples=0)


def test_non_finite_loss_raises_naming_the_stage(seed):
    method, net = tiny()
    batch = blobs(2, seed=0)
    batch.image[0, 0, 0, 0] = math.nan
    for stage in method.stages():
        method.begin_stage(net, stage)
        with pytest.raises(FloatingPointError, match=rf"dpersona {stage.name} \(training_step call 0\): non-finite loss"):
            method.training_step(net, batch, stage)


def test_bad_batches_fail_clearly(seed):
    method, net = tiny()
    s1 = method.stages()[0]
    batch = blobs(2, seed=0)
    with pytest.raises(ValueError, match="no valid rater"):
        method.training_step(net, MultiRaterBatch(batch.image, batch.masks, torch.zeros(2, 3, dtype=torch.bool)), s1)
    with pytest.raises(ValueError, match="3 raters"):
        method.training_step(net, MultiRaterBatch(batch.image, batch.masks[:, :2], batch.rater_valid[:, :2]), s1)


def test_missing_rater_is_never_a_reconstruction_target(seed):
    method, net = tiny()
    batch = blobs(2, seed=0)
    valid = torch.tensor([[True, False, True], [True, False, True]])
    out = method.training_step(net, MultiRaterBatch(batch.image, batch.masks, valid), method.stages()[1])
    assert bool(torch.isfinite(out["loss"]))


def held_out_losses(method: DPersona, net: DPersonaNet, stage, batch: MultiRaterBatch) -> dict[str, float]:
    torch.manual_seed(123)
    net.eval()
    with torch.no_grad():
        return {k: float(v) for k, v in method.training_step(net, batch, stage).items()}


@pytest.mark.slow
def test_tiny_training_lowers_each_stage_loss(seed):
    """Stage 1 then stage 2 on blobs (32x32, batch 4, few steps); losses on a held-out batch."""
    method, net = tiny(l2_weight=0.0)
    train, held = [blobs(4, seed=s) for s in range(4)], blobs(8, seed=99)
    for stage, steps, lr in zip(method.stages(), (15, 20), (3e-3, 1e-2), strict=True):
        method.begin_stage(net, stage)
        before = held_out_losses(method, net, stage, held)
        opt = torch.optim.Adam(method.stage_parameters(net, stage), lr=lr)
        method.train_mode(net, stage)
        for step in range(steps):
            opt.zero_grad()
            method.training_step(net, train[step % 4], stage)["loss"].backward()
            opt.step()
        after = held_out_losses(method, net, stage, held)
        assert after["loss"] < before["loss"], (stage.name, before, after)
        if stage.name == "stage1":  # not only the KL term: reconstruction and bounds improve
            assert after["rec"] < before["rec"] and after["bound"] < before["bound"], (before, after)


def test_compiled_wrapper_is_unwrapped(seed):
    method, net = tiny()
    wrapped = torch.compile(net)  # lazy: nothing compiles until its forward is called
    stage = method.stages()[0]
    method.begin_stage(wrapped, stage)
    method.train_mode(wrapped, stage)
    assert bool(torch.isfinite(method.training_step(wrapped, blobs(2, seed=0), stage)["loss"]))
    assert method.predict(wrapped, blobs(1, seed=1).image, 2).samples.shape == (1, 2, 32, 32)
    with pytest.raises(ValueError, match="DPersonaNet"):
        method.predict(torch.nn.Linear(2, 2), blobs(1, seed=1).image, 2)
