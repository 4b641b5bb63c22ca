"""Engine hardening (issue 12.1, 12.17, 12.18): weights-only checkpoints, a trailing training
batch of one, probunet's non-finite loss."""

from __future__ import annotations

import os

import pytest
import torch
from test_engine_toys import Toy, ToyConfig, ToyFlat, ToySet

from mrseg_bench.datasets.base import Split
from mrseg_bench.engine.run_config import RunConfig
from mrseg_bench.engine.train import NonFiniteLossError, checkpoint_path, train

CPU = torch.device("cpu")
SPLIT = Split(train=tuple(range(0, 12)), val=tuple(range(12, 16)), test=tuple(range(16, 20)))
CFG = RunConfig(batch_size=4, n_samples=3, val_n_samples=2)


class _Payload:
    """Unpickling this runs ``os.system`` (creates ``marker``)."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_not_run(tmp_path):
    marker = tmp_path / "pwned"
    last = checkpoint_path(tmp_path / "run", "stage1", "last")
    last.parent.mkdir(parents=True)
    torch.save({"stage": "stage1", "epoch": 1, "model": _Payload(marker)}, last)
    method = Toy(ToyConfig(epochs=2, stage2_epochs=1))
    ds = ToySet(20)
    with pytest.raises(ValueError, match=rf"checkpoint {last}: refused"):
        train(method, method.build(ds.info), ds, SPLIT, CFG, tmp_path / "run", seed=0, device=CPU)
    assert not marker.exists()


def test_checkpoint_resume_under_weights_only(tmp_path):
    """Checkpoints (RNG as tensors, Adam + scheduler state) load with weights_only=True and a
    resumed run equals a straight one."""
    def run(d, stop=None):
        torch.manual_seed(0)
        method = Toy(ToyConfig(epochs=3, stage2_epochs=1))
        ds = ToySet(20)
        model = method.build(ds.info)

        def hook(stage, epoch, step):
            if (stage, epoch, step) == stop:
                raise KeyboardInterrupt

        cfg = RunConfig(batch_size=4, n_samples=3, val_n_samples=2, checkpoint_every=1)
        try:
            train(method, model, ds, SPLIT, cfg, d, seed=0, device=CPU, on_step=hook)
        except KeyboardInterrupt:
            return None
        return model

    straight = run(tmp_path / "a")
    assert run(tmp_path / "b", stop=("stage1", 2, 1)) is None
    state = torch.load(checkpoint_path(tmp_path / "b", "stage1", "last"), weights_only=True)
    assert "optimizer" in state and isinstance(state["rng"]["numpy_keys"], torch.Tensor)
    resumed = run(tmp_path / "b")
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


class _PooledBN(torch.nn.Module):
    """A net whose BatchNorm sees one value per channel per image (like an encoder's 1x1
    bottleneck): a training batch of one image crashes it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm1d(4)
        self.head = torch.nn.Conv2d(4, 1, 1)
        self.heads = torch.nn.Conv2d(4, 3, 1)
        self.drop = torch.nn.Identity()

    def trunk(self, x):
        f = self.conv(x)
        return f * self.bn(f.mean((2, 3)))[:, :, None, None]


class _BNToy(ToyFlat):
    def build(self, dataset_info):
        return _PooledBN()


@pytest.mark.parametrize("n_train, batch, sizes_train, sizes_eval", [
    (25, 8, [8, 8, 8], [8, 8, 8, 1]),  # QUBIQ at image_size=32: 25 training cases
    (9, 4, [4, 4], [4, 4, 1]),
    (8, 8, [8], [8]),
    (1, 8, [1], [1]),  # nothing to merge with: kept
    (10, 4, [4, 4, 2], [4, 4, 2]),
])
def test_trailing_batch_of_one_dropped_in_training_only(n_train, batch, sizes_train, sizes_eval):
    from mrseg_bench.engine.data import make_batches

    ds = ToySet(max(n_train, 2))
    idx = list(range(n_train))
    got = [len(b) for b in make_batches(ds, idx, batch, shuffle=True, seed=3, training=True)]
    assert got == sizes_train
    assert [len(b) for b in make_batches(ds, idx, batch, shuffle=False, seed=0)] == sizes_eval
    # shuffled: the dropped case changes with the epoch's seed
    if sizes_train != sizes_eval:
        seen = [{c for b in make_batches(ds, idx, batch, shuffle=True, seed=s, training=True) for c in b.case_id}
                for s in range(6)]
        assert len(set.union(*seen)) == n_train


def test_training_with_a_trailing_batch_of_one_does_not_crash(tmp_path):
    torch.manual_seed(0)
    method = _BNToy(ToyConfig(epochs=1, stage2_epochs=1))
    ds = ToySet(20)
    split = Split(train=tuple(range(0, 9)), val=tuple(range(9, 10)), test=tuple(range(10, 12)))
    cfg = RunConfig(batch_size=4, n_samples=2, val_n_samples=2)
    res = train(method, method.build(ds.info), ds, split, cfg, tmp_path, seed=0, device=CPU)
    assert res.train_images == 8  # 9 cases in batches 4+4 (+1 dropped)


def test_synthetic_26_cases_split_leaves_no_batch_of_one():
    """The issue's synthetic case: 26 cases; whatever the split leaves, no training batch of one."""
    from mrseg_bench.datasets.synthetic import synthetic
    from mrseg_bench.engine.data import make_batches
    from mrseg_bench.run.plan import make_run_split

    ds = synthetic(num_cases=26, image_size=16)
    split = make_run_split(ds, RunConfig())
    for bs in (2, 4, 8):
        sizes = [len(b) for b in make_batches(ds, split.train, bs, shuffle=True, seed=0, training=True)]
        assert sum(sizes) >= len(split.train) - 1 and (1 not in sizes or len(split.train) == 1)


def test_probunet_diverging_stops_with_the_nan_message(tmp_path):
    from mrseg_bench.baselines.probunet.method import ProbUNet, ProbUNetConfig
    from mrseg_bench.datasets.synthetic import synthetic

    ds = synthetic(num_cases=12, image_size=32)
    cfg = ProbUNetConfig(lr=1e30, epochs=2, encoder_name="resnet18", decoder_channels=(16, 16, 16, 16, 16),
                         prior_filters=(4, 4, 4, 4, 4))
    method = ProbUNet(cfg)
    torch.manual_seed(0)
    split = Split(train=tuple(range(8)), val=(8, 9), test=(10, 11))
    with pytest.raises(NonFiniteLossError, match=r"method 'probunet' stage 'train' epoch \d+ step \d+: loss is nan"):
        train(method, method.build(ds.info), ds, split, RunConfig(batch_size=4), tmp_path, seed=0, device=CPU)
