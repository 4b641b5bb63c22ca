"""A third-party METHOD registered only through the ``mrseg_bench.plugins`` entry-point group is
found by ``METHODS.get``, built, trained one step and predicts under the same contract."""

from __future__ import annotations

import sys
import textwrap

import torch

from mrseg_bench import registry
from mrseg_bench.method import Method, Stage, create_method
from mrseg_bench.registry import METHODS, PLUGIN_GROUP, load_plugins
from mrseg_bench.types import Capability, DatasetInfo, MultiRaterBatch

MODULE = "mrseg_thirdparty_method"
NAME = "thirdparty.meanconv"

PLUGIN_SOURCE = textwrap.dedent(f'''\
    """A tiny third-party method: one 3x3 conv, trained on the valid-rater mean."""
    from dataclasses import dataclass

    import torch
    from torch import nn

    from mrseg_bench.baselines.common import valid_rater_mean
    from mrseg_bench.losses import generalised_dice_loss
    from mrseg_bench.method import Method, MethodConfig, MethodInfo
    from mrseg_bench.registry import register_method
    from mrseg_bench.types import Capability, Prediction


    @dataclass
    class MeanConvConfig(MethodConfig):
        width: int = 3


    class MeanConv(Method):
        info = MethodInfo("{NAME}", "none", frozenset({{Capability.CONSENSUS}}), MeanConvConfig)

        def build(self, dataset_info):
            w = self.cfg.width
            return nn.Conv2d(dataset_info.in_channels, 1, w, padding=w // 2)

        def training_step(self, model, batch, stage):
            target = valid_rater_mean(batch.masks, batch.rater_valid)[:, None]
            return {{"loss": generalised_dice_loss(model(batch.image), target)}}

        @torch.no_grad()
        def predict(self, model, images, n_samples):
            return Prediction(consensus=torch.sigmoid(model(images))[:, 0])


    @register_method("{NAME}")
    def meanconv(cfg=None):
        return MeanConv(cfg or MeanConvConfig())
    ''')


def test_method_registered_through_entry_point(tmp_path, monkeypatch):
    dist = tmp_path / "mrseg_thirdparty-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mrseg-thirdparty\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{PLUGIN_GROUP}]\nmeanconv = {MODULE}\n")
    (tmp_path / f"{MODULE}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert MODULE not in sys.modules
    try:
        errors = load_plugins(force=True)
        assert "meanconv" not in errors
        factory = METHODS.get(NAME)
        assert NAME in METHODS.names("thirdparty.*")
        method = create_method(NAME, {"width": "5"})  # typed overrides work for plugins too
        assert isinstance(method, Method) and method.cfg.width == 5
        info = DatasetInfo("d", 2, 3, ("a", "b", "c"), (16, 16))
        model = method.build(info)
        batch = MultiRaterBatch(torch.randn(2, 2, 16, 16),
                                (torch.rand(2, 3, 16, 16) > 0.5).to(torch.uint8),
                                torch.tensor([[True, True, False], [True, False, True]]))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        before = [p.detach().clone() for p in model.parameters()]
        parts = method.training_step(model, batch, Stage("train", 1, 1e-2))
        parts["loss"].backward()
        opt.step()
        assert torch.isfinite(parts["loss"])
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
        pred = method.predict(model, batch.image, n_samples=4)
        assert pred.capabilities() == method.info.capabilities == {Capability.CONSENSUS}
        assert pred.consensus.shape == (2, 16, 16)
        assert factory().info.name == NAME
    finally:
        METHODS.remove(NAME)
        registry.plugin_errors.pop("meanconv", None)
        sys.modules.pop(MODULE, None)
    assert NAME not in METHODS
