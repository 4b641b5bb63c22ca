"""Model selection (``run.select``): rules, the primary metric, plan-time checks, and that the
best epoch follows the selection (a toy whose validation loss and metric disagree)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import test_engine_toys as toys
import torch
from test_engine_toys import Toy, ToyConfig, ToyFlat, ToySet
from torch import nn

from mrseg_bench.datasets.base import Split
from mrseg_bench.engine.run_config import RunConfig
from mrseg_bench.engine.select import (
    check_selection,
    parse_select,
    primary_metric,
    resolve_selection,
)
from mrseg_bench.engine.train import checkpoint_path, train
from mrseg_bench.executors.grid import run_grid
from mrseg_bench.method import Method, MethodConfig, MethodInfo, create_method
from mrseg_bench.run import UsageError, plan_grid
from mrseg_bench.types import Capability, DatasetInfo, Prediction

CPU = torch.device("cpu")
SPLIT = Split(train=tuple(range(0, 8)), val=tuple(range(8, 12)), test=tuple(range(12, 16)))
D, P, C = Capability.DIVERSE, Capability.PERSONALIZED, Capability.CONSENSUS
PRESET = toys.preset_toml(num_cases=16, n_samples=2, profile=False, qualitative_cases=0)


# -- the rules -----------------------------------------------------------------------------
@pytest.mark.parametrize("caps, metric", [
    ({P}, "per_rater_dice_matched"), ({D}, "ged"), ({C}, "consensus_dice"),
    ({D, P}, "per_rater_dice_matched"), ({D, C}, "ged"), ({P, C}, "per_rater_dice_matched"),
    ({D, P, C}, "per_rater_dice_matched"),
])
def test_primary_metric_precedence(caps, metric):
    assert primary_metric(caps) == metric


def test_parse_and_resolve_rules():
    toy, flat = Toy(ToyConfig()), ToyFlat(ToyConfig())
    s1, s2 = toy.stages()
    assert [(r.method, r.stage, r.value) for r in parse_select("auto, toy:stage2=loss,:stage1=ged")] == [
        ("*", None, "auto"), ("toy", "stage2", "loss"), ("*", "stage1", "ged")]
    assert resolve_selection("auto", "toy", toy, s1).metric == "per_rater_dice_matched"
    # a later matching rule wins; rules for other methods or stages do not apply
    rule = "loss,toy=dice_match,toy:stage2=ged,toy.flat=consensus_dice_soft"
    assert [resolve_selection(rule, "toy", toy, s).metric for s in (s1, s2)] == ["dice_match", "ged"]
    assert resolve_selection(rule, "toy.flat", flat, flat.stages()[0]).metric == "consensus_dice_soft"
    assert resolve_selection("toy*=loss", "toy.flat", flat, flat.stages()[0]) == \
        resolve_selection("loss", "x", flat, flat.stages()[0])
    # direction from the metric's spec
    assert resolve_selection("ged", "toy", toy, s1).mode == "min"
    assert resolve_selection("dice_match", "toy", toy, s1).mode == "max"
    assert resolve_selection("loss", "toy", toy, s1).mode == "min"
    # a stage that declares a metric monitor keeps it under auto
    mon = Toy(ToyConfig(monitor="dice_max"))
    assert resolve_selection("auto", "toy", mon, mon.stages()[0]).metric == "dice_max"
    assert resolve_selection("auto", "toy", mon, mon.stages()[1]).metric == "per_rater_dice_matched"


@pytest.mark.parametrize("select, match", [
    ("", "give auto"), ("toy:=ged", "names no stage"), ("=ged", "needs a value"), ("a,,b", "empty rule"),
])
def test_malformed_select_is_refused(select, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(select=select)


@pytest.mark.parametrize("select, match", [
    ("nosuch", "unknown selection 'nosuch'"),
    ("consensus_dice", "needs consensus outputs; the method produces diverse, personalized"),
    ("toy:stage9=ged", "has no stage 'stage9'"),
    ("rater_disagreement", "cannot rank checkpoints"),
])
def test_check_selection_refuses(select, match):
    with pytest.raises(ValueError, match=match):
        check_selection(select, "toy", Toy(ToyConfig()))


def test_dpersona_selects_as_the_reference_on_validation():
    sel = check_selection("auto", "dpersona", create_method("dpersona"))
    assert {k: (v.metric, v.mode) for k, v in sel.items()} == {
        "stage1": ("dice_match", "max"), "stage2": ("per_rater_dice_matched", "max")}
    probunet = check_selection("auto", "probunet", create_method("probunet"))
    assert probunet["train"].metric == "ged" and probunet["train"].mode == "min"
    fusion = check_selection("auto", "fusion.majority", create_method("fusion.majority"))
    assert fusion["train"].metric == "consensus_dice"


def test_plan_refuses_a_selection_the_method_cannot_give(toy_preset):
    with pytest.raises(UsageError, match="run.select: method 'toy.flat' stage 'train': metric 'ged' needs diverse"):
        plan_grid("toy,toy.flat", "toyset", [0], toy_preset, sets=["run.select=ged"])
    plan = plan_grid("toy", "toyset", [0], toy_preset, sets=["run.select=toy:stage1=loss"])
    assert plan.specs[0].run_cfg.select == "toy:stage1=loss"
    other = plan_grid("toy", "toyset", [0], toy_preset)
    assert other.specs[0].config_hash != plan.specs[0].config_hash  # selection changes the result


# -- the best epoch follows run.select ---------------------------------------------------
VAL_LOSS = [0.5, 0.3, 0.4]  # the validation loss is best after epoch 1


@dataclasses.dataclass
class ScriptedConfig(MethodConfig):
    epochs: int = 3
    lr: float = 1e-2


class Scripted(Method):
    """One stage; its validation loss is VAL_LOSS[epoch], its consensus is all-zero (Dice 0)
    until the last epoch, then all-one (Dice > 0): loss and metric disagree on the best epoch."""

    info = MethodInfo("scripted", "", frozenset({C}), ScriptedConfig)

    def build(self, dataset_info: DatasetInfo) -> nn.Module:
        return nn.Conv2d(dataset_info.in_channels, 1, 1)

    def training_step(self, model, batch, stage):
        if not model.training:  # validation
            return {"loss": torch.tensor(VAL_LOSS[self.epoch_of(stage)])}
        return {"loss": model(batch.image).pow(2).mean()}

    def predict(self, model, images, n_samples):
        last = self.epoch_of(self.stages()[0]) == self.cfg.epochs - 1
        return Prediction(consensus=torch.full((images.shape[0], *images.shape[-2:]), float(last)))


class ReadLog(ToySet):
    """ToySet that records every index it is asked for."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.read: set[int] = set()

    def __getitem__(self, i):
        self.read.add(int(i))
        return super().__getitem__(i)


@pytest.mark.parametrize("select, metric, best_epoch", [("auto", "consensus_dice", 2), ("loss", "loss", 1)])
def test_best_epoch_follows_select_and_never_reads_test(tmp_path, select, metric, best_epoch):
    torch.manual_seed(0)
    method, ds = Scripted(ScriptedConfig()), ReadLog(16)
    model = method.build(ds.info)
    weights = {}

    def keep(stage, epoch, step):
        weights[epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    res = train(method, model, ds, SPLIT, RunConfig(batch_size=4, val_n_samples=1, select=select), tmp_path,
                seed=0, device=CPU, on_step=keep)
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["val_loss"] for r in log] == pytest.approx(VAL_LOSS)
    assert all(r["select"] == metric for r in log)
    if metric != "loss":
        assert [r[f"val_{metric}"] > 0 for r in log] == [False, False, True]
    assert res.best["train"]["epoch"] == best_epoch and res.best["train"]["metric"] == metric
    assert res.best["train"]["score"] == log[best_epoch][f"val_{metric}"]
    best = torch.load(checkpoint_path(tmp_path, "train", "best"), weights_only=True)
    assert best["epoch"] == best_epoch + 1
    for k, v in model.state_dict().items():  # the model ends on the selected epoch's weights
        assert torch.equal(v, weights[best_epoch][k]) and torch.equal(v, best["model"][k])
    assert not ds.read & set(SPLIT.test) and set(SPLIT.val) <= ds.read


@pytest.mark.slow
def test_result_json_records_the_selection(toy_preset, tmp_path):
    plan = plan_grid("toy", "toyset", [0], toy_preset, sets=["run.select=toy:stage2=loss"])
    (outcome,) = run_grid(plan, tmp_path / "runs", tmp_path / "runs" / "results.sqlite")
    result = json.loads((outcome.run_dir / "result.json").read_text())
    log = [json.loads(x) for x in (outcome.run_dir / "train_log.jsonl").read_text().splitlines()]
    sel = result["selection"]
    assert sel["stage1"]["metric"] == "per_rater_dice_matched" and sel["stage1"]["mode"] == "max"
    assert sel["stage2"] == {"metric": "loss", "mode": "min", "epoch": 0, "value": log[-1]["val_loss"]}
    s1 = [r["val_per_rater_dice_matched"] for r in log if r["stage"] == "stage1"]
    assert sel["stage1"]["value"] == max(s1) and sel["stage1"]["epoch"] == s1.index(max(s1))
