"""TensorBoard event files of a run (``run.tensorboard = true``), to watch it live.

``<run dir>/tensorboard/`` gets, per stage ``S``: ``S/train/loss``, ``S/train/lr`` (after warm-up) and ``S/train/grad_norm``
(before clipping) at every optimiser step (x = the step within the
stage), and per epoch ``S/epoch/<key>`` for each number of the ``train_log.jsonl`` record
(``train_loss``, ``val_loss``, ``val_<selection metric>``, ``lr``, ``images_per_s``).
``tensorboard --logdir <out>`` shows every run of an experiment folder.

Needs the ``tensorboard`` package (``pip install 'mrseg-bench[tensorboard]'``); without it the run
trains without event files and warns once (a ``UserWarning`` naming the package).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

INSTALL_HINT = "run.tensorboard=true needs the tensorboard package: pip install 'mrseg-bench[tensorboard]'"


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class Board:
    """A ``SummaryWriter`` on ``<run dir>/tensorboard``."""

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def step(self, stage: str, step: int, values: dict[str, float | None]) -> None:
        for key, value in values.items():
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(f"{stage}/train/{key}", value, step)

    def epoch(self, record: dict[str, Any]) -> None:
        stage, epoch = record["stage"], int(record["epoch"])
        for key, value in record.items():
            if key not in ("epoch", "steps") and isinstance(value, int | float) and not isinstance(value, bool) \
                    and math.isfinite(value):
                self.writer.add_scalar(f"{stage}/epoch/{key}", value, epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_board(run_dir: Path) -> Board | None:
    """A Board for the run; None (and a UserWarning with the install hint) without tensorboard."""
    if not tensorboard_available():
        import warnings

        warnings.warn(f"{INSTALL_HINT}; training without event files", UserWarning, stacklevel=2)
        return None
    return Board(run_dir)
