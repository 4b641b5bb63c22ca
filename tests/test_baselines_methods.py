"""Baseline-specific checks: declared capabilities, fusion flag, rater validity, typed overrides, smoke training."""

from __future__ import annotations

import pytest
import torch
from test_method_contract import TINY  # noqa: E402 - the contract test's tiny sizes (tests/ is on sys.path)

from mrseg_bench.method import Stage, create_method
from mrseg_bench.registry import METHODS
from mrseg_bench.types import Capability, DatasetInfo, MultiRaterBatch

# every registered baseline, found from the registry (the contract for every method, built-in or
# plugin, is tests/test_method_contract.py)
BASELINES = sorted(n for n, e in METHODS.items() if e.factory.__module__.startswith("mrseg_bench.baselines"))
INFO = DatasetInfo("blobs", 1, 3, ("r0", "r1", "r2"), (32, 32))
STAGE = Stage("train", epochs=1, lr=1e-3)


def blobs(b: int = 2, r: int = 3, size: int = 32, seed: int = 0) -> MultiRaterBatch:
    """Disks at random centres; rater k draws the disk with radius 5 + 2k (a systematic rater
    style); the image is the middle disk plus noise. Rater 2 of image 0 is invalid."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.randint(10, size - 10, (b, 2), generator=g)
    dist = ((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2).float().sqrt()
    radii = 5.0 + 2.0 * torch.arange(r).float()
    masks = (dist[:, None] <= radii[None, :, None, None]).to(torch.uint8)  # [B,R,H,W]
    image = (dist <= radii.mean()).float()[:, None] + 0.1 * torch.randn(b, 1, size, size, generator=g)
    valid = torch.ones(b, r, dtype=torch.bool)
    valid[0, r - 1] = False
    return MultiRaterBatch(image, masks, valid, [f"c{i}" for i in range(b)], [f"g{i}" for i in range(b)])


def tiny(name: str, **extra):
    """``name`` built tiny: the contract test's sizes for the fields its config has, plus ``extra``."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(METHODS.get(name)().cfg)}
    return create_method(name, {**{k: v for k, v in TINY.items() if k in fields and k != "epochs"}, **extra})


def test_declared_capabilities():
    caps = {n: METHODS.get(n)().info.capabilities for n in BASELINES}
    assert {"unet", "probunet", "fusion.majority", "fusion.staple", "fusion.soft", "per_rater.separate",
            "per_rater.multihead", "cm.global", "cm.pixel", "pionono"} <= set(BASELINES)
    D, P, C = Capability.DIVERSE, Capability.PERSONALIZED, Capability.CONSENSUS
    assert caps["probunet"] == {D}
    assert caps["unet"] == {D, C}
    assert caps["fusion.majority"] == caps["fusion.staple"] == caps["fusion.soft"] == {C}
    assert caps["per_rater.separate"] == caps["per_rater.multihead"] == caps["pionono"] == {P, D}
    assert caps["cm.global"] == caps["cm.pixel"] == {P, C}


def test_fusion_as_sample_flag_adds_one_flagged_sample():
    method = tiny("fusion.soft", as_sample="true")
    assert method.info.capabilities == {Capability.CONSENSUS, Capability.DIVERSE}
    assert type(method).info.capabilities == {Capability.CONSENSUS}  # class info untouched
    model = method.build(INFO).eval()
    pred = method.predict(model, blobs().image, n_samples=7)
    assert pred.samples.shape == (2, 1, 32, 32)
    assert torch.equal(pred.samples[:, 0], pred.consensus)


def test_batch_with_an_image_without_valid_rater_is_rejected():
    batch = blobs()
    batch.rater_valid[1] = False
    for name in ("unet", "probunet", "fusion.staple", "per_rater.multihead"):
        method = tiny(name)
        with pytest.raises(ValueError, match="no valid rater"):
            method.training_step(method.build(INFO), batch, STAGE)


def test_overrides_are_typed():
    m = create_method("probunet", {"backbone": "kohl", "latent_dim": "3", "beta": "0.5",
                                   "kohl_filters": "8,16"})
    assert (m.cfg.latent_dim, m.cfg.beta, m.cfg.kohl_filters) == (3, 0.5, (8, 16))
    with pytest.raises(ValueError, match="backbone"):
        create_method("probunet", {"backbone": "vgg"})
    with pytest.raises(ValueError, match="loss"):
        create_method("unet", {"loss": "focal"})


@pytest.mark.slow
@pytest.mark.parametrize("name", BASELINES)
def test_smoke_training_lowers_loss(name):
    torch.manual_seed(0)
    extra = {"backbone": "kohl", "kohl_filters": (8, 16, 32)} if name == "probunet" else {}
    method = tiny(name, **extra)
    model = method.build(INFO)
    model.train()
    batch = blobs(b=4, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    # MoSE's loss is an OT cost over soft IoU (bounded in [0, 1]): it moves more slowly
    for _ in range(60 if name == "mose" else 15):
        opt.zero_grad()
        loss = method.training_step(model, batch, STAGE)["loss"]
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.9 * first, losses
