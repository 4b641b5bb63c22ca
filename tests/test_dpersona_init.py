"""D-Persona's personalisation heads start as the reference code starts them: Kaiming-normal
weights N(0, 2 / fan_in), biases N(0, 1e-3^2) truncated at +-2e-3; their attention over the
prior bank is then sharper at init than with PyTorch's default uniform init."""

from __future__ import annotations

import math

import pytest
import torch

from mrseg_bench.method import create_method
from mrseg_bench.methods.dpersona.config import DPersonaConfig
from mrseg_bench.methods.dpersona.heads import ProjectionHeads
from mrseg_bench.methods.dpersona.model import DPersonaNet
from mrseg_bench.types import DatasetInfo

TRUNC_STD = 0.8796  # std of N(0, 1) truncated to [-2, 2]


def test_reference_init_statistics():
    torch.manual_seed(0)
    heads = ProjectionHeads(4, 16, (32, 16, 6)).requires_grad_(False)
    assert heads.init == "reference"
    for w, b in zip(heads.weight, heads.bias, strict=True):
        fan_in = w.shape[2] * 9
        for r in range(4):  # every head on its own
            assert float(w[r].mean()) == pytest.approx(0.0, abs=4 * math.sqrt(2 / fan_in / w[r].numel()))
            assert float(w[r].std()) == pytest.approx(math.sqrt(2 / fan_in), rel=0.12)
        assert float(b.abs().max()) <= 2e-3
        assert float(b.std()) == pytest.approx(1e-3 * TRUNC_STD, rel=0.35)
    # the whole stack: tight estimate of the per-layer std
    w0 = heads.weight[0]
    assert float(w0.std()) == pytest.approx(math.sqrt(2 / 144), rel=0.03)
    all_b = torch.cat([b.flatten() for b in heads.bias])
    assert float(all_b.std()) == pytest.approx(1e-3 * TRUNC_STD, rel=0.12)


def test_pytorch_init_is_uniform_in_bound():
    torch.manual_seed(0)
    heads = ProjectionHeads(4, 16, (32, 16, 6), init="pytorch").requires_grad_(False)
    for w, b in zip(heads.weight, heads.bias, strict=True):
        bound = 1 / math.sqrt(w.shape[2] * 9)
        assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.95 * bound
        assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)  # U(-a, a): a / sqrt(3)
        assert float(b.abs().max()) <= bound


def test_config_and_model_pass_the_init_through():
    assert DPersonaConfig().head_init == "reference"
    with pytest.raises(ValueError, match="head_init must be 'reference' or 'pytorch'"):
        DPersonaConfig(head_init="xavier")
    method = create_method("dpersona", {"head_init": "pytorch", "encoder_name": "resnet18",
                                        "decoder_channels": (32, 16, 16, 16, 16), "prior_filters": (8, 16)})
    net = method.build(DatasetInfo("x", 1, 2, ("a", "b"), (32, 32)))
    assert net.heads.init == "pytorch"


def _entropy(heads: ProjectionHeads, features: torch.Tensor, bank: torch.Tensor) -> float:
    a = torch.softmax(heads(features) @ bank.transpose(1, 2), dim=-1)
    return float(-(a * a.clamp_min(1e-30).log()).sum(-1).mean())


def test_attention_at_init_is_sharper_than_with_default_init():
    torch.manual_seed(0)
    net = DPersonaNet(1, 4, encoder_name="resnet18", decoder_channels=(64, 32, 32, 16, 16)).eval()
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    centres = torch.tensor([[10, 12], [20, 16], [16, 22], [12, 20]])
    d = ((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2).float().sqrt()
    images = ((d < 6).float() + 0.2 * torch.randn(4, 32, 32))[:, None]
    with torch.no_grad():
        features = net.backbone(images)
        bank = net.prior.distribution(images).sample((100,)).transpose(0, 1)
        ent = {}
        for init in ("reference", "pytorch"):
            values = []
            for seed in range(4):
                torch.manual_seed(seed)
                values.append(_entropy(ProjectionHeads(4, 16, (32, 16, 6), init=init).eval(), features, bank))
            ent[init] = sum(values) / len(values)
    assert ent["pytorch"] <= math.log(100) + 1e-6
    assert ent["pytorch"] > math.log(100) - 0.05  # near-uniform attention
    assert ent["reference"] < ent["pytorch"] - 0.02
