"""Engine: training loop, checkpoints, resume == straight, NaN guard, evaluation, profiling."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math

import pytest
import torch
from test_engine_toys import Toy, ToyConfig, ToyFlat, ToySet

from mrseg_bench.datasets.base import Split
from mrseg_bench.engine.evaluate import evaluate, mean_metric
from mrseg_bench.engine.profile import count_parameters, flops_per_image, profile_method
from mrseg_bench.engine.run_config import RunConfig
from mrseg_bench.engine.train import NonFiniteLossError, checkpoint_path, train
from mrseg_bench.types import collate_samples

CPU = torch.device("cpu")
SPLIT = Split(train=tuple(range(0, 12)), val=tuple(range(12, 16)), test=tuple(range(16, 20)))
CFG = RunConfig(batch_size=4, n_samples=3, val_n_samples=2, profile_steps=1, latency_repeats=3)


def _fresh(cfg: ToyConfig | None = None, seed: int = 0):
    torch.manual_seed(seed)
    method = Toy(cfg or ToyConfig(epochs=2, stage2_epochs=2))
    ds = ToySet(20)
    return method, method.build(ds.info), ds


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_train_writes_checkpoints_and_log(tmp_path):
    method, model, ds = _fresh()
    res = train(method, model, ds, SPLIT, dataclasses.replace(CFG, select="loss"), tmp_path, seed=0, device=CPU)
    for stage in ("stage1", "stage2"):
        for kind in ("last", "best"):
            assert checkpoint_path(tmp_path, stage, kind).is_file()
        assert res.stage_wall_s[stage] > 0
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in log] == [("stage1", 0), ("stage1", 1), ("stage2", 0), ("stage2", 1)]
    assert all("val_loss" in r and r["steps"] == 3 for r in log)  # 12 train cases / batch 4
    # the model ends on stage2's best; best is the min validation loss of that stage
    best = torch.load(checkpoint_path(tmp_path, "stage2", "best"), weights_only=True)
    s2 = [r["val_loss"] for r in log if r["stage"] == "stage2"]
    assert best["score"] == min(s2) and res.best["stage2"]["score"] == min(s2)
    for k, v in best["model"].items():
        assert torch.equal(v, model.state_dict()[k])
    # stage 2 trained only the heads: the trunk equals stage 1's best
    s1 = torch.load(checkpoint_path(tmp_path, "stage1", "best"), weights_only=True)["model"]
    assert torch.equal(s1["trunk.0.weight"], model.state_dict()["trunk.0.weight"])
    assert not torch.equal(s1["heads.weight"], model.state_dict()["heads.weight"])


@pytest.mark.parametrize("every, crashes", [
    (1, [("stage1", 1, 1), ("stage2", 0, 2)]),  # mid-epoch in each stage
    (2, [("stage1", 1, 2), ("stage1", 2, 0), ("stage2", 1, 1)]),  # before / after the first save
])
def test_resume_after_crash_equals_straight_run(tmp_path, every, crashes):
    cfg = RunConfig(batch_size=4, val_n_samples=2, checkpoint_every=every)
    tc = ToyConfig(epochs=3, stage2_epochs=2)
    method, model, ds = _fresh(tc)
    torch.manual_seed(0)
    train(method, model, ds, SPLIT, cfg, tmp_path / "straight", seed=5, device=CPU)
    straight = _state(model)
    straight_log = (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()
    final = torch.load(checkpoint_path(tmp_path / "straight", "stage1", "last"), weights_only=True)
    assert final["epoch"] == 3 and "optimizer" not in final  # a finished stage drops the optimiser

    for crash_at in crashes:
        run = tmp_path / f"crash_{'_'.join(map(str, crash_at))}"
        method, model, ds = _fresh(tc)
        torch.manual_seed(0)

        def boom(stage, epoch, step, crash_at=crash_at):
            if (stage, epoch, step) == crash_at:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            train(method, model, ds, SPLIT, cfg, run, seed=5, device=CPU, on_step=boom)
        last = checkpoint_path(run, crash_at[0], "last")
        saved = torch.load(last, weights_only=True)["epoch"] if last.exists() else 0
        assert saved == (crash_at[1] // every) * every  # the last resumable point before the crash
        # a new process: the model built after seeding (as the runner does), another global RNG
        method, model, ds = _fresh(tc, seed=0)
        if saved:
            for p in model.parameters():  # weights come from the checkpoint, not the init
                torch.nn.init.normal_(p)
        torch.manual_seed(999)
        train(method, model, ds, SPLIT, cfg, run, seed=5, device=CPU)
        for k, v in straight.items():
            assert torch.equal(v, model.state_dict()[k]), (crash_at, k)
        log = (run / "train_log.jsonl").read_text().splitlines()
        # the log was cut back to the checkpoint: each epoch once, with the straight run's values
        strip = [{k: v for k, v in r.items() if k not in ("wall_s", "images_per_s")} for r in map(json.loads, log)]
        want = [{k: v for k, v in r.items() if k not in ("wall_s", "images_per_s")} for r in map(json.loads, straight_log)]
        assert strip == want, crash_at


def test_completed_run_is_not_retrained(tmp_path):
    method, model, ds = _fresh()
    train(method, model, ds, SPLIT, CFG, tmp_path, seed=0, device=CPU)
    calls = method.calls
    method2, model2, _ = _fresh(seed=7)
    train(method2, model2, ds, SPLIT, CFG, tmp_path, seed=0, device=CPU)
    assert method2.calls == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k])
    assert calls > 0


def test_nan_loss_names_method_stage_epoch_step(tmp_path):
    method, model, ds = _fresh()
    orig = method.training_step
    count = {"n": 0}

    def nan_step(m, batch, stage):
        count["n"] += 1
        out = orig(m, batch, stage)
        # epoch 0: 3 training steps + 1 validation batch; the 5th call is epoch 1 step 0
        return {"loss": out["loss"] * float("nan")} if count["n"] == 5 else out

    method.training_step = nan_step
    with pytest.raises(NonFiniteLossError, match=r"method 'toy' stage 'stage1' epoch 1 step 0: loss is nan"):
        train(method, model, ds, SPLIT, CFG, tmp_path, seed=0, device=CPU)


def test_grad_clip_and_step_cap(tmp_path):
    method, model, ds = _fresh(ToyConfig(epochs=1, stage2_epochs=1))
    cfg = RunConfig(batch_size=2, grad_clip=1e-3, max_steps_per_epoch=2, val_n_samples=2)
    before = _state(model)
    train(method, model, ds, SPLIT, cfg, tmp_path, seed=0, device=CPU)
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["steps"] for r in log] == [2, 2]
    # Adam's first steps move each weight by ~lr regardless of clipping; check it moved at all
    assert not torch.equal(before["trunk.0.weight"], model.state_dict()["trunk.0.weight"])


def test_monitor_metric_picks_best_on_validation(tmp_path):
    method, model, ds = _fresh(ToyConfig(epochs=3, stage2_epochs=1, monitor="dice_max"))
    train(method, model, ds, SPLIT, CFG, tmp_path, seed=0, device=CPU)
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    scores = [r["val_dice_max"] for r in log if r["stage"] == "stage1"]
    best = torch.load(checkpoint_path(tmp_path, "stage1", "best"), weights_only=True)
    assert best["score"] == max(scores) and best["epoch"] == scores.index(max(scores)) + 1


def test_evaluate_rows_per_case_and_capabilities(tmp_path):
    method, model, ds = _fresh()
    rows = evaluate(method, model, ds, SPLIT.test, 3, CPU, batch_size=3)
    cases = {r["case_id"] for r in rows}
    assert cases == {ds.case_ids[i] for i in SPLIT.test}
    metrics = {r["metric"] for r in rows}
    assert {"ged", "dice_soft", "per_rater_dice"} <= metrics and "consensus_dice" not in metrics
    per_rater = [r for r in rows if r["metric"] == "per_rater_dice"]
    assert len(per_rater) == 4 * 3 and {r["rater"] for r in per_rater} == {0, 1, 2}
    assert all(r["rater"] is None for r in rows if r["metric"] == "ged")
    assert 0 <= mean_metric(rows, "dice_soft") <= 1
    with pytest.raises(ValueError, match="monitor metric 'nope'"):
        mean_metric(rows, "nope")
    flat = ToyFlat(ToyConfig())
    frows = evaluate(flat, flat.build(ds.info), ds, SPLIT.test, 3, CPU, batch_size=4)
    assert {r["metric"] for r in frows} >= {"consensus_dice"} and "ged" not in {r["metric"] for r in frows}


def test_evaluate_rejects_undeclared_outputs():
    method, model, ds = _fresh()
    method.predict = lambda m, x, n: ToyFlat.predict(method, m, x, n)  # returns consensus only
    with pytest.raises(ValueError, match="predict returned \\['consensus'\\] but declares"):
        evaluate(method, model, ds, SPLIT.test, 2, CPU, batch_size=2)


def test_profile_rows_and_flops_by_hand():
    method, model, ds = _fresh()
    batch = collate_samples([ds[i] for i in range(4)])
    # FLOPs of predict on one 16x16 image, width 4, n_samples 3:
    # trunk conv 3x3 (1->4): 2*9*1*4 per pixel; head 1x1 (4->1); heads 1x1 (4->3); BN/ReLU free
    hw = 16 * 16
    want = 2 * 9 * 1 * 4 * hw + 2 * 4 * 1 * hw + 2 * 4 * 3 * hw
    assert flops_per_image(method, model, batch.image, 3) == want
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    before = _state(model)
    rng = torch.get_rng_state()
    rows = profile_method(method, model, batch, CPU, n_samples=3, steps=2, repeats=4, memory="off")
    names = [r["name"] for r in rows]
    # issue 11.6: every stage is timed; memory per phase (off here: NaN, see test_harden_profile)
    assert names == ["params", "flops_per_image", "train_images_per_s", "train_images_per_s_stage1",
                     "train_images_per_s_stage2", "infer_images_per_s", "latency_p50_ms", "latency_p95_ms",
                     "peak_memory_mb", "peak_memory_predict_mb", "peak_memory_train_mb", "peak_memory_baseline_mb"]
    vals = {r["name"]: r["value"] for r in rows}
    assert vals["params"] == count_parameters(model) and vals["flops_per_image"] == want
    assert vals["train_images_per_s"] > 0 and vals["infer_images_per_s"] > 0
    assert 0 < vals["latency_p50_ms"] <= vals["latency_p95_ms"] and math.isnan(vals["peak_memory_mb"])
    for k, v in before.items():  # profiling trains a copy: weights untouched, RNG restored
        assert torch.equal(v, model.state_dict()[k])
    assert torch.equal(rng, torch.get_rng_state())


@pytest.mark.parametrize("opts", [dict(precision="bf16"), dict(channels_last=True), dict(image_size=24)])
def test_precision_memory_format_and_resize_paths(tmp_path, opts):
    method, model, ds = _fresh(ToyConfig(epochs=1, stage2_epochs=1))
    cfg = RunConfig(batch_size=4, val_n_samples=2, channels_last=opts.get("channels_last", False),
                    image_size=opts.get("image_size", 0))
    precision = opts.get("precision", "fp32")
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train(method, model, ds, SPLIT, cfg, tmp_path, seed=0, device=CPU, precision=precision)
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert all(0 < r["train_loss"] < 10 and 0 < r["val_loss"] < 10 for r in log)
    rows = evaluate(method, model, ds, SPLIT.test, 2, CPU, 4, precision=precision, image_size=cfg.image_size,
                    channels_last=cfg.channels_last)
    assert rows and all(0 <= r["value"] <= 1 for r in rows if r["metric"] == "dice_soft")


# -- checkpoints that do not drown the disk, stop requests, untrusted files (issues 11, 12) -------
def _log_rows(run):
    return [{k: v for k, v in json.loads(x).items() if k not in ("wall_s", "images_per_s")}
            for x in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("stop_at", [("stage1", 1, 1), ("stage1", 0, 2), ("stage2", 1, 0)])
def test_stop_request_writes_last_mid_epoch_and_resume_equals_straight(tmp_path, stop_at):
    from mrseg_bench.engine.train import TrainingStopped

    cfg = RunConfig(batch_size=4, val_n_samples=2, checkpoint_interval_s=1e9)  # no save by time
    tc = ToyConfig(epochs=3, stage2_epochs=2)
    method, model, ds = _fresh(tc)
    train(method, model, ds, SPLIT, cfg, tmp_path / "straight", seed=5, device=CPU)
    straight = _state(model)
    flag = {"stop": False}

    def hook(stage, epoch, step):
        flag["stop"] = flag["stop"] or (stage, epoch, step) == stop_at

    run = tmp_path / "stopped"
    method, model, ds = _fresh(tc)
    with pytest.raises(TrainingStopped) as info:
        train(method, model, ds, SPLIT, cfg, run, seed=5, device=CPU, on_step=hook,
              stop=lambda: "interrupt" if flag["stop"] else None)
    assert info.value.reason == "interrupt" and info.value.checkpoint == checkpoint_path(run, stop_at[0], "last")
    saved = torch.load(info.value.checkpoint, weights_only=True)
    if stop_at[2] == 2:  # a stop after an epoch's last step is taken at the epoch's end
        assert saved["epoch"] == stop_at[1] + 1 and saved["partial"] is None
    else:
        assert (saved["epoch"], saved["partial"]["step"]) == (stop_at[1], stop_at[2] + 1)
    method, model, ds = _fresh(tc, seed=3)
    torch.manual_seed(999)
    train(method, model, ds, SPLIT, cfg, run, seed=5, device=CPU)
    for k, v in straight.items():
        assert torch.equal(v, model.state_dict()[k]), (stop_at, k)
    assert _log_rows(run) == _log_rows(tmp_path / "straight")


def test_claim_lost_stops_without_writing(tmp_path):
    from mrseg_bench.engine.train import TrainingStopped

    method, model, ds = _fresh()
    with pytest.raises(TrainingStopped) as info:
        train(method, model, ds, SPLIT, RunConfig(batch_size=4, checkpoint_interval_s=1e9), tmp_path, seed=0,
              device=CPU, stop=lambda: "claim lost")
    assert info.value.checkpoint is None and not (tmp_path / "checkpoints").exists()


def test_last_is_written_by_time_and_at_stage_end_only(tmp_path, monkeypatch):
    tr = importlib.import_module("mrseg_bench.engine.train")

    saves = []
    real = tr._atomic_save
    monkeypatch.setattr(tr, "_atomic_save", lambda obj, path: saves.append(path.name) or real(obj, path))
    method, model, ds = _fresh(ToyConfig(epochs=4, stage2_epochs=2))
    train(method, model, ds, SPLIT, RunConfig(batch_size=4), tmp_path / "a", seed=0, device=CPU)
    # default interval 600 s: one best + one last per stage, at its end; nothing per epoch
    assert saves == ["stage1_best.pt", "stage1_last.pt", "stage2_best.pt", "stage2_last.pt"]
    saves.clear()
    method, model, ds = _fresh(ToyConfig(epochs=4, stage2_epochs=2))
    train(method, model, ds, SPLIT, RunConfig(batch_size=4, checkpoint_interval_s=0), tmp_path / "b", seed=0,
          device=CPU)
    assert saves.count("stage1_last.pt") == 4 and saves.count("stage2_last.pt") == 2
    assert saves.count("stage1_best.pt") <= 4


def test_checkpoints_load_weights_only_and_best_holds_weights_only(tmp_path):
    method, model, ds = _fresh()
    train(method, model, ds, SPLIT, CFG, tmp_path, seed=0, device=CPU)
    for stage in ("stage1", "stage2"):
        best = torch.load(checkpoint_path(tmp_path, stage, "best"), weights_only=True)
        assert set(best) == {"stage", "epoch", "model", "score"}
        last = torch.load(checkpoint_path(tmp_path, stage, "last"), weights_only=True)
        assert "optimizer" not in last and torch.is_tensor(last["rng"]["python"]) and torch.is_tensor(last["rng"]["numpy_keys"])
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_corrupt_or_malicious_last_fails_naming_the_file_and_force(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    import os

    last = checkpoint_path(tmp_path, "stage1", "last")
    last.parent.mkdir(parents=True)
    for payload in (b"\x80\x04truncated", pickle.dumps({"stage": "stage1", "x": Evil()})):
        last.write_bytes(payload)
        method, model, ds = _fresh()
        with pytest.raises(ValueError, match=r"checkpoint .*stage1_last\.pt: (cannot be read|refused).*--force"):
            train(method, model, ds, SPLIT, CFG, tmp_path, seed=0, device=CPU)
    assert not (tmp_path / "pwned").exists()


def test_a_failed_save_leaves_no_temp_file(tmp_path, monkeypatch):
    import errno

    tr = importlib.import_module("mrseg_bench.engine.train")

    def full(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tr.torch, "save", full)
    method, model, ds = _fresh()
    with pytest.raises(OSError, match="No space left"):
        train(method, model, ds, SPLIT, CFG, tmp_path, seed=0, device=CPU)
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "train_log.jsonl"]
