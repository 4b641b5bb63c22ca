"""The per-epoch hook of a tune trial's run: report, then ask the pruner.

A trial's run spec carries ``trial`` (JSON)::

    {"storage": "<abs path>/journal.log", "study": "<method>", "number": int,
     "metric": "ged", "stage": "<the method's last stage>",
     "pruner": {"kind": "median" | "none", "n_startup_trials": int, "n_warmup_steps": int}}

``epoch_hook(trial)`` returns ``on_epoch(stage, epoch, record) -> bool`` for ``engine.train``:
for each epoch of the last stage whose record holds ``val_<metric>`` (a validation value), it
reports the value at step ``epoch`` to the study and returns the pruner's verdict (True stops the
run as pruned). A report the storage refuses (the trial was closed meanwhile) never stops the run.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

_KEYS = {"storage": str, "study": str, "number": int, "metric": str, "stage": str}


def check_trial(trial: Any) -> dict[str, Any]:
    """``trial`` if it is a well-formed trial field; ValueError (one line) otherwise."""
    if not isinstance(trial, dict):
        raise ValueError("spec: 'trial' must be an object")
    for key, tp in _KEYS.items():
        if not isinstance(trial.get(key), tp) or isinstance(trial.get(key), bool):
            raise ValueError(f"spec: trial {key!r} is missing or not a {tp.__name__}")
    if trial.get("pruner") is not None and not isinstance(trial["pruner"], dict):
        raise ValueError("spec: trial 'pruner' must be an object")
    return trial


def epoch_hook(trial: dict[str, Any]) -> Callable[[str, int, dict[str, Any]], bool]:
    """The hook for ``trial`` (module docstring)."""
    import optuna

    from .study import make_pruner, open_storage

    trial = check_trial(trial)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(trial["storage"])
    pruner = make_pruner(trial.get("pruner"))
    study = optuna.load_study(study_name=trial["study"], storage=storage, pruner=pruner)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(trial["study"]),
                                                               trial["number"])
    handle = optuna.trial.Trial(study, trial_id)
    key = f"val_{trial['metric']}"

    def on_epoch(stage: str, epoch: int, record: dict[str, Any]) -> bool:
        value = record.get(key)
        if stage != trial["stage"] or not isinstance(value, int | float) or not math.isfinite(value):
            return False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a resumed run reports an epoch again
                handle.report(float(value), int(epoch))
            return bool(handle.should_prune())
        except (RuntimeError, ValueError):  # the trial was closed meanwhile
            return False

    return on_epoch
