"""Stage schedules and per-group learning rates (engine/optim.py), and the engine's use of them."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_engine_toys import Toy, ToyConfig, ToySet
from torch import nn

from mrseg_bench.datasets.base import Split
from mrseg_bench.engine.optim import (
    build_optimizer,
    build_scheduler,
    step_on_validation,
    step_per_epoch,
)
from mrseg_bench.engine.run_config import RunConfig
from mrseg_bench.engine.train import train
from mrseg_bench.method import Stage

CPU = torch.device("cpu")
SPLIT = Split(train=tuple(range(0, 8)), val=tuple(range(8, 12)), test=tuple(range(12, 16)))


class TwoParts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 2)
        self.b = nn.Linear(2, 1)


class GroupToy(Toy):
    """The toy method with its per-rater heads at 10x the stage lr and a configurable schedule."""

    schedule = "cosine"
    options: dict = {}

    def stages(self) -> list[Stage]:
        return [Stage("stage1", self.cfg.epochs, self.cfg.lr, schedule=self.schedule,
                      schedule_options=dict(self.options), mode="max")]

    def param_groups(self, model, stage):
        heads = list(model.heads.parameters())
        rest = [p for n, p in model.named_parameters() if not n.startswith("heads.")]
        return [{"params": rest, "lr": stage.lr, "name": "trunk"},
                {"params": heads, "lr": 10 * stage.lr, "name": "heads"}]


def _lrs(stage: Stage, scores=None, lrs=(1.0,)):
    """lr of each group at epochs 0..epochs (scores feed a plateau schedule)."""
    groups = [{"params": [nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    opt = torch.optim.Adam(groups, lr=1.0)
    sched = build_scheduler(opt, stage)
    out = [[g["lr"] for g in opt.param_groups]]
    for e in range(stage.epochs):
        opt.step()
        step_per_epoch(sched)
        if scores is not None:
            step_on_validation(sched, scores[e])
        out.append([g["lr"] for g in opt.param_groups])
    return out


def test_cosine_default_by_hand():
    got = [x[0] for x in _lrs(Stage("s", 4, 1.0))]
    c = math.cos(math.pi / 4)
    assert got == pytest.approx([1.0, (1 + c) / 2, 0.5, (1 - c) / 2, 0.0], abs=1e-12)


def test_poly_by_hand_and_per_group():
    got = _lrs(Stage("s", 4, 1.0, schedule="poly", schedule_options={"power": 2}), lrs=(1.0, 0.02))
    want = [1.0, 0.5625, 0.25, 0.0625, 0.0]  # (1 - e/4) ** 2
    assert [x[0] for x in got] == pytest.approx(want, abs=1e-12)
    assert [x[1] for x in got] == pytest.approx([0.02 * w for w in want], abs=1e-12)
    default = _lrs(Stage("s", 2, 1.0, schedule="poly"))
    assert [x[0] for x in default] == pytest.approx([1.0, 0.5 ** 0.9, 0.0], abs=1e-12)


def test_plateau_steps_on_validation_by_hand():
    stage = Stage("s", 5, 1.0, schedule="plateau", schedule_options={"factor": 0.5, "patience": 1})
    # min mode: 1.0 best, 0.9 best, 0.95 bad(1), 0.96 bad(2 > patience) -> halve, 0.97 bad(1)
    got = [x[0] for x in _lrs(stage, scores=[1.0, 0.9, 0.95, 0.96, 0.97])]
    assert got == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5]
    floor = Stage("s", 3, 1.0, schedule="plateau", mode="max",
                  schedule_options={"factor": 0.5, "patience": 0, "min_lr": 0.3})
    assert [x[0] for x in _lrs(floor, scores=[3.0, 2.0, 1.0])] == [1.0, 1.0, 0.5, 0.3]


def test_constant():
    assert [x[0] for x in _lrs(Stage("s", 3, 1.0, schedule="constant"), lrs=(0.1,))] == [0.1] * 4


@pytest.mark.parametrize("schedule, options", [("cosine", {}), ("poly", {"power": 0.9}),
                                               ("plateau", {"factor": 0.5, "patience": 0})])
def test_scheduler_state_round_trips(schedule, options):
    stage = Stage("s", 6, 1.0, schedule=schedule, schedule_options=options)
    scores = [5.0, 6.0, 7.0, 4.0, 8.0, 9.0]
    straight = _lrs(stage, scores)

    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1.0)
    sched = build_scheduler(opt, stage)
    for e in range(3):
        opt.step()
        step_per_epoch(sched)
        step_on_validation(sched, scores[e])
    saved = (opt.state_dict(), sched.state_dict())
    opt2 = torch.optim.Adam([p], lr=1.0)
    sched2 = build_scheduler(opt2, stage)
    opt2.load_state_dict(saved[0])
    sched2.load_state_dict(saved[1])
    resumed = []
    for e in range(3, 6):
        opt2.step()
        step_per_epoch(sched2)
        step_on_validation(sched2, scores[e])
        resumed.append(opt2.param_groups[0]["lr"])
    assert resumed == pytest.approx([x[0] for x in straight[4:]], abs=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    ({"schedule": "step"}, "schedule must be one of"),
    ({"schedule": "poly", "schedule_options": {"factor": 0.5}}, "no option"),
    ({"schedule": "plateau", "schedule_options": {"factor": 2.0}}, "factor=2.0"),
    ({"schedule": "plateau", "schedule_options": {"patience": 1.5}}, "patience"),
    ({"mode": "up"}, "mode"),
])
def test_bad_schedule_is_a_value_error_naming_the_stage(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        Stage("warmup", 2, 1e-3, **kwargs)
    assert "'warmup'" in str(err.value)


def test_default_param_groups_and_validation():
    method = Toy(ToyConfig())
    model = method.build(ToySet(2).info)
    stage = Stage("stage1", 1, 0.5, weight_decay=0.1)
    opt = build_optimizer(method, model, stage)
    assert len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert (g["lr"], g["name"], g["weight_decay"]) == (0.5, "all", 0.1)
    assert len(g["params"]) == len(list(model.parameters()))

    per = GroupToy(ToyConfig(lr=0.01))
    opt = build_optimizer(per, model, per.stages()[0])
    assert {g["name"]: g["lr"] for g in opt.param_groups} == {"trunk": 0.01, "heads": 0.1}

    class Overlap(Toy):
        def param_groups(self, model, stage):
            return [{"params": list(model.parameters()), "lr": 1.0},
                    {"params": list(model.heads.parameters()), "lr": 1.0, "name": "heads"}]

    class Empty(Toy):
        def param_groups(self, model, stage):
            return [{"params": [], "lr": 1.0, "name": "nothing"}]

    with pytest.raises(ValueError, match="two param groups"):
        build_optimizer(Overlap(ToyConfig()), model, stage)
    with pytest.raises(ValueError, match="'toy' stage 'stage1'.*'nothing' has no parameters"):
        build_optimizer(Empty(ToyConfig()), model, stage)


def test_engine_uses_groups_and_schedule_and_resume_restores_it(tmp_path):
    """Poly (power 1) over 3 epochs: the log's lr (group 0, after the epoch's step) is
    lr * (1 - (e+1)/3). A plateau run crashed mid-stage resumes to the straight run's weights
    and lrs (mode max on the loss: every falling loss is 'worse', so the lr halves each epoch)."""
    cfg = RunConfig(batch_size=4, val_n_samples=2, checkpoint_every=1)

    def fresh(schedule, options):
        torch.manual_seed(0)
        method = GroupToy(ToyConfig(epochs=3, lr=0.01))
        method.schedule, method.options = schedule, options
        ds = ToySet(16)
        return method, method.build(ds.info), ds

    method, model, ds = fresh("poly", {"power": 1.0})
    train(method, model, ds, SPLIT, cfg, tmp_path / "poly", seed=1, device=CPU)
    log = [json.loads(x) for x in (tmp_path / "poly" / "train_log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in log] == pytest.approx([0.01, 0.01 * 2 / 3, 0.01 / 3], abs=1e-12)  # the lr each epoch ran at

    plateau = ("plateau", {"factor": 0.5, "patience": 0})
    method, model, ds = fresh(*plateau)
    train(method, model, ds, SPLIT, cfg, tmp_path / "straight", seed=1, device=CPU)
    straight = {k: v.clone() for k, v in model.state_dict().items()}
    want = [json.loads(x)["lr"] for x in (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()]
    assert len(set(want)) > 1  # the plateau schedule did change the lr

    def boom(stage, epoch, step):
        if (epoch, step) == (2, 0):
            raise KeyboardInterrupt

    method, model, ds = fresh(*plateau)
    with pytest.raises(KeyboardInterrupt):
        train(method, model, ds, SPLIT, cfg, tmp_path / "crash", seed=1, device=CPU, on_step=boom)
    method, model, ds = fresh(*plateau)
    train(method, model, ds, SPLIT, cfg, tmp_path / "crash", seed=1, device=CPU)
    for k, v in straight.items():
        assert torch.equal(v, model.state_dict()[k]), k
    got = {json.loads(x)["epoch"]: json.loads(x)["lr"]
           for x in (tmp_path / "crash" / "train_log.jsonl").read_text().splitlines()}
    assert [got[e] for e in range(3)] == want
