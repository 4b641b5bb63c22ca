"""A tiny dataset and a tiny two-stage method used by the engine/runner/CLI tests (and, through
the entry-point group, as a third-party plugin), plus tests of the engine's device helpers.

``register()`` adds dataset ``toyset`` and methods ``toy`` (diverse + personalised, two stages)
and ``toy.flat`` (consensus, one stage); ``unregister()`` removes them (``registered()`` does both
around a block). ``preset_toml(...)`` is the text of a tiny preset for them.
Env hooks for tests: ``MRSEG_TOY_HANG_AFTER=n`` + ``MRSEG_TOY_MARKER=path``: the n-th training
step writes the marker and sleeps (to be killed); ``MRSEG_TOY_FAIL=1``: every step raises;
``MRSEG_TOY_SIGNAL_AFTER=n``: the n-th training step sends SIGTERM to its own process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from mrseg_bench.datasets.base import MultiRaterDataset
from mrseg_bench.engine.device import (
    epoch_seed,
    get_rng_state,
    resolve_device,
    resolve_precision,
    seed_everything,
    set_rng_state,
)
from mrseg_bench.losses import bce_loss
from mrseg_bench.method import Method, MethodConfig, MethodInfo, Stage
from mrseg_bench.registry import DATASETS, METHODS
from mrseg_bench.types import Capability, DatasetInfo, MultiRaterSample, Prediction

R, S = 3, 16


class ToySet(MultiRaterDataset):
    """Bright disc on noise; rater r thresholds the disc at a different radius."""

    def __init__(self, num_cases: int = 20, image_size: int = S) -> None:
        self.n, self.s = num_cases, image_size
        self.info = DatasetInfo("toyset", 1, R, tuple(f"r{i}" for i in range(R)), (image_size, image_size))

    @property
    def case_ids(self) -> list[str]:
        return [f"case{i:03d}" for i in range(self.n)]

    @property
    def group_ids(self) -> list[str]:
        return [f"pat{i // 2:03d}" for i in range(self.n)]  # two cases per patient

    def __getitem__(self, i: int) -> MultiRaterSample:
        g = torch.Generator().manual_seed(1000 + i)
        yy, xx = torch.meshgrid(torch.arange(self.s), torch.arange(self.s), indexing="ij")
        c = torch.randint(self.s // 4, 3 * self.s // 4, (2,), generator=g)
        d = ((yy - c[0]) ** 2 + (xx - c[1]) ** 2).float().sqrt()
        image = (d < self.s / 5).float()[None] + 0.3 * torch.randn(1, self.s, self.s, generator=g)
        radii = torch.tensor([self.s / 6, self.s / 5, self.s / 4])[:, None, None]
        masks = (d[None] < radii).to(torch.uint8)
        return MultiRaterSample(image.float(), masks, torch.ones(R, dtype=torch.bool), self.case_ids[i],
                                self.group_ids[i])


@dataclass
class ToyConfig(MethodConfig):
    epochs: int = 2
    lr: float = 1e-2
    width: int = 4
    stage2_epochs: int = 1
    monitor: str = "loss"


class ToyNet(nn.Module):
    def __init__(self, cin: int, r: int, width: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(cin, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Conv2d(width, 1, 1)
        self.drop = nn.Dropout2d(0.2)
        self.heads = nn.Conv2d(width, r, 1)


class Toy(Method):
    info = MethodInfo("toy", "Toy et al. 2026", frozenset({Capability.DIVERSE, Capability.PERSONALIZED}),
                      ToyConfig)

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__(cfg)
        self.calls = 0

    def build(self, dataset_info: DatasetInfo) -> nn.Module:
        return ToyNet(dataset_info.in_channels, dataset_info.num_raters, self.cfg.width)

    def stages(self) -> list[Stage]:
        return [Stage("stage1", self.cfg.epochs, self.cfg.lr, monitor=self.cfg.monitor,
                      mode="min" if self.cfg.monitor == "loss" else "max"),
                Stage("stage2", self.cfg.stage2_epochs, self.cfg.lr)]

    def begin_stage(self, model: ToyNet, stage: Stage) -> None:
        for p in model.parameters():
            p.requires_grad_(True)
        if stage.name == "stage2":
            for p in [*model.trunk.parameters(), *model.head.parameters()]:
                p.requires_grad_(False)

    def training_step(self, model: ToyNet, batch, stage: Stage) -> dict[str, torch.Tensor]:
        self.calls += 1
        hang = int(os.environ.get("MRSEG_TOY_HANG_AFTER", "0"))
        if hang and self.calls == hang:
            with open(os.environ["MRSEG_TOY_MARKER"], "w") as fh:
                fh.write("hanging")
            time.sleep(600)
        if int(os.environ.get("MRSEG_TOY_SIGNAL_AFTER", "0")) == self.calls:
            os.kill(os.getpid(), __import__("signal").SIGTERM)
        if os.environ.get("MRSEG_TOY_FAIL"):
            raise RuntimeError("toy failure injected")
        f = model.trunk(batch.image)
        if stage.name == "stage1":
            pick = torch.randint(0, batch.masks.shape[1], (1,)).item()  # uses the global RNG
            logit = model.head(f) + 0.1 * torch.randn_like(f[:, :1])
            return {"loss": bce_loss(logit, batch.masks[:, pick:pick + 1])}
        return {"loss": bce_loss(model.heads(model.drop(f)), batch.masks)}

    def predict(self, model: ToyNet, images: torch.Tensor, n_samples: int) -> Prediction:
        f = model.trunk(images)
        logit = model.head(f)
        noise = torch.randn(images.shape[0], n_samples, *images.shape[-2:], device=images.device)
        return Prediction(samples=torch.sigmoid(logit + noise), personalized=torch.sigmoid(model.heads(f)))


class ToyFlat(Toy):
    info = MethodInfo("toy.flat", "", frozenset({Capability.CONSENSUS}), ToyConfig)

    def stages(self) -> list[Stage]:
        return [Stage("train", self.cfg.epochs, self.cfg.lr)]

    def training_step(self, model, batch, stage):
        f = model.trunk(batch.image)
        return {"loss": bce_loss(model.head(f), batch.masks.float().mean(1, keepdim=True))}

    def predict(self, model, images, n_samples):
        return Prediction(consensus=torch.sigmoid(model.head(model.trunk(images)))[:, 0])


def toyset(root=None, num_cases: int = 20, image_size: int = S) -> ToySet:
    return ToySet(int(num_cases), int(image_size))


def toy(cfg: ToyConfig | None = None) -> Toy:
    return Toy(cfg or ToyConfig())


def toy_flat(cfg: ToyConfig | None = None) -> ToyFlat:
    return ToyFlat(cfg or ToyConfig())


def register() -> None:
    """Register the toys (idempotent)."""
    for reg, name, obj in ((DATASETS, "toyset", toyset), (METHODS, "toy", toy), (METHODS, "toy.flat", toy_flat)):
        if name not in reg._items:
            reg.add(name, obj)


def unregister() -> None:
    DATASETS.remove("toyset")
    METHODS.remove("toy")
    METHODS.remove("toy.flat")


@contextmanager
def registered() -> Iterator[None]:
    """The toys are registered inside the block, and removed after it (also on error)."""
    register()
    try:
        yield
    finally:
        unregister()


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"no TOML form for {value!r} in a toy preset")


def preset_toml(dataset: str = "toyset", *, description: str | None = "toy preset", epochs: int = 1,
                num_cases: int | None = None, image_size: int | None = None, **run: object) -> str:
    """TOML of a tiny preset for the toy methods: ``[run]`` batch 4, ``n_samples`` 2,
    ``val_n_samples`` 2 on the CPU (``run`` keywords add or override keys); ``[dataset.<dataset>]``
    with ``num_cases`` / ``image_size`` when given; ``epochs`` for stage 1 (stage 2: 1 epoch);
    ``description=None`` leaves the description out."""
    run_keys = {"batch_size": 4, "n_samples": 2, "val_n_samples": 2, **run, "device": "cpu"}
    data = {k: v for k, v in (("num_cases", num_cases), ("image_size", image_size)) if v is not None}
    lines = [] if description is None else [f"description = {_toml(description)}"]
    lines.append("[run]")
    lines += [f"{k} = {_toml(v)}" for k, v in run_keys.items()]
    if data:
        lines += [f"[dataset.{dataset}]", *(f"{k} = {_toml(v)}" for k, v in data.items())]
    lines += ['[method."toy*"]', f"epochs = {epochs}", "stage2_epochs = 1"]
    return "\n".join(lines) + "\n"


# -- tests of the engine's device helpers -----------------------------------------------------
def test_resolve_device_and_precision():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="auto\\|cpu\\|cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision(None, torch.device("cuda")) == "bf16"
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"
    with pytest.raises(ValueError, match="bf16"):
        resolve_precision("fp8", torch.device("cpu"))


def test_rng_state_roundtrip_and_epoch_seed():
    seed_everything(3)
    state = get_rng_state()
    a = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    set_rng_state(state)
    b = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    seeds = {epoch_seed(s, e, k) for s in range(3) for e in range(5) for k in range(2)}
    assert len(seeds) == 30  # distinct per (seed, epoch, stage)
    assert epoch_seed(1, 2, 0) == epoch_seed(1, 2, 0)


def test_toyset_is_valid():
    ds = ToySet(4)
    for i in range(len(ds)):
        ds[i].validate(f"toy {i}")
    assert len(set(ds.group_ids)) == 2
