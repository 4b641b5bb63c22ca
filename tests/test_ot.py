"""Batched Sinkhorn and the soft-IoU cost (baselines/ot.py), checked against hand-solved cases."""

from __future__ import annotations

import math

import pytest
import torch

from mrseg_bench.baselines.ot import sinkhorn, soft_iou_cost


def test_sinkhorn_symmetric_2x2_closed_form():
    # a = b = (1/2, 1/2), C = [[0,1],[1,0]]: by symmetry P = [[x, y],[y, x]] with x + y = 1/2 and
    # x^2 / y^2 = exp(2/eps) (the entropic optimality condition P11 P22 / (P12 P21) = e^{2/eps}),
    # so x = 1/2 / (1 + k), y = 1/2 * k / (1 + k), k = exp(-1/eps).
    eps = 0.5
    k = math.exp(-1 / eps)
    cost = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    half = torch.full((1, 2), 0.5)
    plan = sinkhorn(half, half, cost, eps=eps, iters=200)
    x, y = 0.5 / (1 + k), 0.5 * k / (1 + k)
    assert torch.allclose(plan[0], torch.tensor([[x, y], [y, x]]), atol=1e-6)


def test_sinkhorn_asymmetric_2x2_hand_solved():
    # a = (0.7, 0.3), b = (0.5, 0.5), C = [[0,1],[1,0]]. With P11 = x the marginals give
    # P12 = 0.7 - x, P21 = 0.5 - x, P22 = x - 0.2, and optimality x (x - 0.2) = e^{2/eps}
    # (0.7 - x)(0.5 - x): a quadratic (e - 1) x^2 - (1.2 e - 0.2) x + 0.35 e = 0, e = e^{2/eps}.
    eps = 1.0
    e = math.exp(2 / eps)
    qa, qb, qc = e - 1, -(1.2 * e - 0.2), 0.35 * e
    x = (-qb - math.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa)  # the root inside (0.2, 0.5)
    assert 0.2 < x < 0.5
    expected = torch.tensor([[x, 0.7 - x], [0.5 - x, x - 0.2]])
    plan = sinkhorn(torch.tensor([[0.7, 0.3]]), torch.tensor([[0.5, 0.5]]),
                    torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]), eps=eps, iters=300)
    assert torch.allclose(plan[0], expected, atol=1e-6)
    # small eps -> the unregularised optimum [[0.5, 0.2], [0, 0.3]], transport cost 0.2
    plan = sinkhorn(torch.tensor([[0.7, 0.3]]), torch.tensor([[0.5, 0.5]]),
                    torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]), eps=0.01, iters=500)
    assert torch.allclose(plan[0], torch.tensor([[0.5, 0.2], [0.0, 0.3]]), atol=1e-4)


def test_sinkhorn_batched_marginals_and_equal_to_single_problems():
    g = torch.Generator().manual_seed(0)
    a = torch.softmax(torch.randn(5, 16, generator=g), 1)
    b = torch.softmax(torch.randn(5, 4, generator=g), 1)
    cost = torch.rand(5, 16, 4, generator=g)
    plan = sinkhorn(a, b, cost, eps=0.05, iters=300)
    assert plan.shape == (5, 16, 4) and bool((plan >= 0).all())
    assert torch.allclose(plan.sum(2), a, atol=1e-4)
    assert torch.allclose(plan.sum(1), b, atol=1e-5)
    for i in range(5):  # a test may loop; the solver does not
        assert torch.allclose(sinkhorn(a[i:i + 1], b[i:i + 1], cost[i:i + 1], 0.05, 300)[0], plan[i], atol=1e-6)


def test_sinkhorn_zero_mass_column_gets_nothing_and_gradients_are_finite():
    a = torch.full((1, 3), 1 / 3, requires_grad=True)
    b = torch.tensor([[0.5, 0.5, 0.0]])  # third rater invalid
    cost = torch.rand(1, 3, 3, requires_grad=True)
    plan = sinkhorn(a, b, cost, eps=0.1, iters=100)
    assert float(plan[0, :, 2].sum().detach()) < 1e-12
    (plan * cost).sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(cost.grad).all()
    assert float(a.grad.abs().sum()) > 0  # the masses (MoSE's gates) receive a gradient


def test_sinkhorn_rejects_bad_shapes():
    with pytest.raises(ValueError, match="do not match"):
        sinkhorn(torch.ones(1, 2) / 2, torch.ones(1, 3) / 3, torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="eps > 0"):
        sinkhorn(torch.ones(1, 2) / 2, torch.ones(1, 2) / 2, torch.zeros(1, 2, 2), eps=0.0)


def test_soft_iou_cost_by_hand():
    probs = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 2, 2)
    masks = torch.stack([torch.tensor([1, 0, 0, 0]), torch.tensor([0, 0, 0, 0]),
                         torch.tensor([1, 1, 0, 0])]).reshape(1, 3, 2, 2).to(torch.uint8)
    # inter/union: (1, 2) -> 1 - 2/3; (0, 2) -> 1 - 1/3; (2, 2) -> 0 (smoothing 1)
    expected = torch.tensor([[[1 - 2 / 3, 1 - 1 / 3, 0.0]]])
    assert torch.allclose(soft_iou_cost(probs, masks), expected, atol=1e-6)
    empty = torch.zeros(1, 1, 2, 2)
    assert float(soft_iou_cost(empty, torch.zeros(1, 1, 2, 2))) == 0.0  # empty vs empty: no cost
    soft = torch.full((1, 1, 2, 2), 0.5)  # soft IoU with p = 0.5 everywhere vs [1,1,0,0]: 2 / (2+2-1+1)
    assert torch.allclose(soft_iou_cost(soft, masks[:, 2:]), torch.tensor([[[1 - 2 / 4]]]))
