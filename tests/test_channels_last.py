"""``--channels-last`` on a model holding 5-D tensors: D-Persona's stacked per-rater head weights
``[R, out, in, k, k]`` made ``Module.to(memory_format=channels_last)`` fail; ``to_channels_last``
converts the 4-D tensors only and leaves the function unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mrseg_bench.engine.device import to_channels_last
from mrseg_bench.registry import METHODS
from mrseg_bench.types import DatasetInfo


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.stack = nn.Parameter(torch.randn(3, 4, 4, 1, 1))  # a 5-D weight, like D-Persona's heads

    def forward(self, x):
        y = self.conv(x)
        return torch.einsum("rocij,bchw->brohw", self.stack, y)


def test_only_4d_tensors_change_layout():
    torch.manual_seed(0)
    net = Mixed()
    x = torch.randn(2, 2, 6, 6)
    ref = net(x)
    with pytest.raises(RuntimeError, match="rank 4"):
        Mixed().to(memory_format=torch.channels_last)
    assert to_channels_last(net) is net
    assert net.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not net.conv.weight.is_contiguous()  # really converted (4 output, 2 input channels, 3x3)
    assert net.stack.dim() == 5 and net.stack.is_contiguous()
    assert isinstance(net.conv.weight, nn.Parameter) and net.conv.weight.requires_grad
    torch.testing.assert_close(net(x.contiguous(memory_format=torch.channels_last)), ref)


def test_dpersona_model_converts():
    factory = METHODS.get("dpersona")
    net = factory().build(DatasetInfo("t", 1, 3, tuple("abc"), (32, 32)))
    assert any(p.dim() == 5 for p in net.parameters())
    to_channels_last(net)
    convs = [p for p in net.parameters() if p.dim() == 4 and p.shape[-1] > 1 and p.shape[1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
