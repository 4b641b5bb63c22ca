"""One contract test for EVERY registered method (like timm's tests over ``list_models()``).

The parameter list is read from METHODS at collection time, so a new method (built-in or plugin
loaded through the entry-point group) is covered without editing a list; ``contract.plugin``, a
method registered by this test, proves that. Each method is built tiny (a ResNet10-t encoder,
narrow decoder, 32x32, 2 input channels, 3 raters so that nothing can hard-code 1 channel or 4
raters) and checked for: one training step per stage (finite scalar losses; gradients reach the
stage's optimiser groups and no other parameter), predict (exactly the declared capabilities,
shapes, values in [0,1], countable FLOPs), determinism (same seed -> same predictions), state-dict round trip, and
bad inputs (wrong channel count, wrong rater count) raising a ValueError that names the method.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from mrseg_bench.baselines.common import check_io, remember_io, valid_rater_mean
from mrseg_bench.engine.profile import flops_per_image
from mrseg_bench.losses import generalised_dice_loss
from mrseg_bench.method import Method, MethodConfig, MethodInfo, create_method
from mrseg_bench.registry import METHODS, load_plugins
from mrseg_bench.types import Capability, DatasetInfo, MultiRaterBatch, Prediction

PLUGIN = "contract.plugin"
CHANNELS, RATERS, SIZE, N = 2, 3, 32, 3
INFO = DatasetInfo("contract", CHANNELS, RATERS, ("r0", "r1", "r2"), (SIZE, SIZE))
# applied to every method whose config has the field (as a preset's [method."*"] section does)
TINY = {"encoder_name": "tu-resnet10t", "decoder_channels": (16, 16, 8, 8, 8), "prior_filters": (4, 8),
        "bank_train": 4, "bank_test": 4, "bound_samples": 2, "kohl_filters": (4, 8), "train_draws": 2,
        "predict_draws": 2, "pixel_head_channels": 4, "head_channels": (4, 4), "epochs": 1,
        # phiseg / mose / tab at 32x32 (2x2 at the bottom of every U-Net, as the smoke preset)
        "n0": 4, "levels": 5, "latent_levels": 3, "filters": (4, 8, 8, 8, 8), "samples_per_expert": 2,
        "hidden": 16, "heads": 2, "ffn": 16, "embed_dim": 8, "train_samples": 2,
        # ssn / flow_ssn / ccdm (ssn takes `filters` and `train_samples` above)
        "head_width": 4, "rank": 3, "base_channels": 4, "base_mult": (1, 2), "flow_channels": 4,
        "flow_mult": (1, 1), "unet_channels": 4, "unet_mult": (1, 2, 2), "attention_ds": (4,), "head_dim": 4,
        "diffusion_steps": 20, "sample_steps": 3}


@dataclass
class PluginConfig(MethodConfig):
    width: int = 3


class PluginMethod(Method):
    """A third-party method as a plugin would write it: one conv, trained on the rater mean."""

    info = MethodInfo(PLUGIN, "none (contract test)", frozenset({Capability.CONSENSUS}), PluginConfig)

    def build(self, dataset_info):
        return remember_io(nn.Conv2d(dataset_info.in_channels, 1, self.cfg.width, padding=1),
                           dataset_info.in_channels, dataset_info.num_raters)

    def training_step(self, model, batch, stage):
        check_io(PLUGIN, model, batch.image, batch.masks)
        target = valid_rater_mean(batch.masks, batch.rater_valid)[:, None]
        return {"loss": generalised_dice_loss(model(batch.image), target)}

    @torch.no_grad()
    def predict(self, model, images, n_samples):
        check_io(PLUGIN, model, images)
        return Prediction(consensus=torch.sigmoid(model(images))[:, 0])


def _names() -> list[str]:
    load_plugins()
    return sorted({*METHODS.names(), PLUGIN})


@pytest.fixture(autouse=True, scope="module")
def plugin_registered():
    if PLUGIN not in METHODS:
        METHODS.add(PLUGIN, lambda cfg=None: PluginMethod(cfg or PluginConfig()), PluginConfig)
    yield
    METHODS.remove(PLUGIN)


def tiny(name: str) -> Method:
    fields = {f.name for f in dataclasses.fields(METHODS.get(name)().cfg)}
    return create_method(name, {k: v for k, v in TINY.items() if k in fields})


def batch(b: int = 2, raters: int = RATERS, channels: int = CHANNELS, seed: int = 0) -> MultiRaterBatch:
    """Disks of radius 5 + 2k for rater k on a noisy image; rater 2 of image 0 is invalid."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    centres = torch.randint(10, SIZE - 10, (b, 2), generator=g)
    dist = ((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2).float().sqrt()
    masks = (dist[:, None] <= (5.0 + 2.0 * torch.arange(raters).float())[None, :, None, None]).to(torch.uint8)
    image = (dist <= 7).float()[:, None].repeat(1, channels, 1, 1) + 0.1 * torch.randn(b, channels, SIZE, SIZE, generator=g)
    valid = torch.ones(b, raters, dtype=torch.bool)
    valid[0, raters - 1] = False
    return MultiRaterBatch(image, masks, valid, [f"c{i}" for i in range(b)], [f"g{i}" for i in range(b)])


def build(method: Method, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return method.build(INFO)


def predict(method: Method, model: nn.Module, images: torch.Tensor, seed: int = 5) -> Prediction:
    model.eval()
    torch.manual_seed(seed)
    return method.predict(model, images, N)


def outputs(pred: Prediction) -> dict[str, torch.Tensor]:
    return {k: v for k in ("samples", "personalized", "consensus") if (v := getattr(pred, k)) is not None}


@pytest.mark.parametrize("name", _names())
def test_training_step_per_stage_trains_exactly_the_stage_parameters(name):
    method = tiny(name)
    assert method.info.name == name and isinstance(method.cfg, method.info.config_cls)
    model = build(method)
    stages = method.stages()
    assert stages, f"{name}: no stage"
    data = batch()
    for stage in stages:
        method.begin_stage(model, stage)
        method.train_mode(model, stage)
        groups = method.param_groups(model, stage)
        ids = {id(p) for g in groups for p in g["params"]}
        assert len(ids) == sum(len(list(g["params"])) for g in groups), f"{name}/{stage.name}: overlapping groups"
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        losses = method.training_step(model, data, stage)
        for key, value in losses.items():
            assert value.ndim == 0 and torch.isfinite(value), (name, stage.name, key, value)
        losses["loss"].backward()
        for g in groups:
            got = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in g["params"]]
            assert any(got), f"{name}/{stage.name}: no gradient reaches group {g.get('name')!r}"
        stray = [n for n, p in model.named_parameters()
                 if id(p) not in ids and p.grad is not None and bool(p.grad.abs().sum() > 0)]
        assert not stray, f"{name}/{stage.name}: gradient outside the stage's parameters: {stray[:5]}"


@pytest.mark.parametrize("name", _names())
def test_predict_declared_outputs_deterministic_and_state_dict_round_trip(name):
    method = tiny(name)
    model = build(method, seed=0)
    images = batch().image
    pred = predict(method, model, images)
    assert pred.capabilities() == method.info.capabilities, name
    b = images.shape[0]
    shapes = {"personalized": (b, RATERS, SIZE, SIZE), "consensus": (b, SIZE, SIZE)}
    for key, t in outputs(pred).items():
        assert t.dtype == torch.float32 and torch.isfinite(t).all(), (name, key)
        assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0, (name, key)
        if key == "samples":
            assert t.ndim == 4 and t.shape[0] == b and t.shape[1] >= 1 and t.shape[2:] == (SIZE, SIZE), t.shape
        else:
            assert tuple(t.shape) == shapes[key], (name, key, tuple(t.shape))

    assert flops_per_image(method, model, images, N) > 0  # the profiler's FLOP counter can trace it

    again = predict(method, build(tiny(name), seed=0), images)
    for key, t in outputs(pred).items():
        assert torch.equal(t, outputs(again)[key]), f"{name}: two builds with seed 0 differ in {key}"

    other = build(tiny(name), seed=1)
    state = model.state_dict()
    assert list(other.state_dict()) == list(state)
    other.load_state_dict(state)
    restored = predict(method, other, images)
    for key, t in outputs(pred).items():
        assert torch.equal(t, outputs(restored)[key]), f"{name}: state dict round trip changes {key}"


@pytest.mark.parametrize("name", _names())
def test_bad_inputs_raise_value_error_naming_the_method(name):
    method = tiny(name)
    model = build(method)
    stage = method.stages()[0]
    method.begin_stage(model, stage)
    method.train_mode(model, stage)
    with pytest.raises(ValueError, match=f"{re.escape(name)}.*channel"):
        method.training_step(model, batch(channels=CHANNELS + 1), stage)
    with pytest.raises(ValueError, match=f"{re.escape(name)}.*rater"):
        method.training_step(model, batch(raters=RATERS + 1), stage)
    model.eval()
    with pytest.raises(ValueError, match=f"{re.escape(name)}.*channel"):
        method.predict(model, batch(channels=CHANNELS - 1).image, N)


def test_plugin_is_among_the_contract_names():
    names = _names()
    assert PLUGIN in names and {"dpersona", "cm.global", "cm.pixel", "pionono", "unet"} <= set(names)
