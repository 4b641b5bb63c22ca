"""``RunConfig``: the engine settings a preset's ``[run]`` section and ``--set run.key=value`` set."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..identity import NOT_HASHED


@dataclass
class RunConfig:
    """Engine settings shared by every method of a run.

    ``n_samples``: samples drawn per test image (10 for LIDC, 50 for NPC in the reference);
    ``val_n_samples``: the same during validation. ``image_size`` (0 = the dataset's own) resizes
    batches on the fly (bilinear image, nearest masks). ``max_steps_per_epoch`` (0 = all) caps
    training batches per epoch; ``max_eval_cases`` (0 = all) caps validation/test cases.
    """

    batch_size: int = 8
    eval_batch_size: int = 0  # 0: batch_size
    n_samples: int = 10
    val_n_samples: int = 4
    num_workers: int = field(default=0, metadata=NOT_HASHED)
    num_threads: int = field(default=0, metadata=NOT_HASHED)  # torch intra-op threads; 0: cores // runs at once (engine/threads.py)
    augment: bool = False
    image_size: int = 0
    max_steps_per_epoch: int = 0
    max_eval_cases: int = 0
    protocol: str = "default"
    split_seed: int | None = None  # None: the protocol's own seed (0; 1337 for "dpersona")
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    num_folds: int | None = None
    fold: int | None = None
    convention: str = "standard"
    threshold: float = 0.5
    ged_estimator: str = "all_pairs"  # GED with ("all_pairs") or without ("distinct") i = i' pairs
    ncc_maps: str = "soft"  # NCC from the soft sample maps (PHiSeg) or "binary" samples
    metrics: str = ""  # comma list; empty: every metric the method's capabilities allow
    aggregate: Literal["case", "volume"] = "case"  # volume: per-slice rows -> one mean row per volume
    device: str = field(default="auto", metadata=NOT_HASHED)
    precision: Literal["auto", "bf16", "fp32"] = field(default="auto", metadata=NOT_HASHED)
    channels_last: bool = False
    compile: bool = False
    grad_clip: float = 0.0  # 0: off; else max global grad norm
    warmup_steps: int = 0  # linear lr warm-up over the first N optimiser steps of each stage (0: off)
    select: str = "auto"  # what picks each stage's best epoch on validation (engine.select)
    tensorboard: bool = field(default=False, metadata=NOT_HASHED)  # write TensorBoard event files to <run dir>/tensorboard/
    val_every: int = 1
    checkpoint_every: int = field(default=0, metadata=NOT_HASHED)  # also write `last` every N epochs (0: only by time, at stage end, on a signal)
    checkpoint_interval_s: float = field(default=600.0, metadata=NOT_HASHED)  # seconds between resumable `last` checkpoints (0: every epoch)
    keep_last: bool = field(default=False, metadata=NOT_HASHED)  # keep the `last` checkpoints when the run finishes
    keep_best: bool = field(default=True, metadata=NOT_HASHED)  # keep the `best` checkpoints (the trained weights) when the run finishes
    claim_heartbeat_s: float = field(default=60.0, metadata=NOT_HASHED)  # the run's claim file is refreshed this often
    claim_stale_s: float = field(default=600.0, metadata=NOT_HASHED)  # a claim not refreshed for this long is stale and may be taken over
    profile: bool = field(default=True, metadata=NOT_HASHED)
    qualitative_cases: int = 4  # test cases saved to qualitative.pt for the report (0: none)
    profile_warmup: int = field(default=1, metadata=NOT_HASHED)
    profile_steps: int = field(default=3, metadata=NOT_HASHED)
    latency_repeats: int = field(default=10, metadata=NOT_HASHED)

    def __post_init__(self) -> None:
        checks = {
            "batch_size": self.batch_size >= 1,
            "eval_batch_size": self.eval_batch_size >= 0,
            "n_samples": self.n_samples >= 1,
            "val_n_samples": self.val_n_samples >= 1,
            "num_workers": self.num_workers >= 0,
            "num_threads": self.num_threads >= 0,
            "image_size": self.image_size >= 0,
            "max_steps_per_epoch": self.max_steps_per_epoch >= 0,
            "max_eval_cases": self.max_eval_cases >= 0,
            "qualitative_cases": self.qualitative_cases >= 0,
            "grad_clip": self.grad_clip >= 0,
            "warmup_steps": self.warmup_steps >= 0,
            "val_every": self.val_every >= 1,
            "checkpoint_every": self.checkpoint_every >= 0,
            "checkpoint_interval_s": self.checkpoint_interval_s >= 0,
            "claim_heartbeat_s": self.claim_heartbeat_s > 0,
            "claim_stale_s": self.claim_stale_s > self.claim_heartbeat_s,
            "profile_steps": self.profile_steps >= 1,
            "latency_repeats": self.latency_repeats >= 1,
            "ged_estimator": self.ged_estimator in ("all_pairs", "distinct"),
            "ncc_maps": self.ncc_maps in ("soft", "binary"),
            "aggregate": self.aggregate in ("case", "volume"),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"run config: invalid value for {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")
        from .select import parse_select

        parse_select(self.select)

    @property
    def eval_bs(self) -> int:
        return self.eval_batch_size or self.batch_size
