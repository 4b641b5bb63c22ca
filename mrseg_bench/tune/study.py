"""The Optuna studies of one tune, in a journal file several processes can share.

Layout: ``<out>/<experiment>/tune/journal.log`` (Optuna's ``JournalStorage`` on a
``JournalFileBackend``: an append-only log, file-locked, so the tune process and every worker
reporting per-epoch values (``tune.hook``) can share it on one file system), one study per
method, named by the method. ``tune.claim`` (``claims``) makes one tune process the driver of an
experiment at a time.

Budget accounting (``used``): a trial counts once it is COMPLETE, PRUNED or FAIL, except a trial
left RUNNING by a dead driver: ``recover_orphans`` fails it, marks it ``orphaned`` (it does not
count) and enqueues its parameters, so the next ``ask`` re-asks the same point; its run has the
same identity, so a run that finished is found done and one cut short resumes from its
checkpoint.

The preset trial (``enqueue_preset_trial``): each study's first trial is the preset's own values
of the searched knobs (user attr ``preset_values``), run to the end (never pruned), so a tune
never returns values worse on validation than those it started from. It counts against the
budget like any trial.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..identity import experiment_slug

JOURNAL = "journal.log"
CLAIM = "tune.claim"
ORPHANED = "orphaned"
PRESET_VALUES = "preset_values"


def tune_dir(out: str | Path, experiment: str) -> Path:
    """``<out>/<experiment slug>/tune``."""
    return Path(out) / experiment_slug(experiment) / "tune"


def open_storage(path: str | Path):
    """The journal storage at ``path`` (created on first use)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


def make_pruner(settings: dict[str, Any] | None):
    """``MedianPruner(n_startup_trials, n_warmup_steps)`` from ``{"kind": "median", ...}``; None
    (or kind "none"): no pruning."""
    import optuna

    if not settings or settings.get("kind") == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=int(settings["n_startup_trials"]),
                                       n_warmup_steps=int(settings["n_warmup_steps"]))


def make_sampler(seed: int, n_startup_trials: int):
    """TPE, seeded; its first ``n_startup_trials`` trials are random."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)


def open_study(storage, method: str, direction: str, sampler, pruner, settings: dict[str, Any]):
    """Create or load method ``method``'s study. ValueError (one line) when an existing one was
    made with other settings (the planned config, the objective, the space): its trials are not
    comparable."""
    import optuna

    study = optuna.create_study(storage=storage, study_name=method, direction=direction, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    before = study.user_attrs.get("settings")
    if before is None:
        study.set_user_attr("settings", settings)
    elif before != settings:
        diff = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        raise ValueError(f"the tune of {method!r} in this experiment was made with another {', '.join(diff)} "
                         "(preset, --set, dataset, seed or search space); give another --experiment")
    return study


def recover_orphans(study) -> list[int]:
    """Fail every RUNNING trial (its driver is gone: we hold the tune claim), mark it orphaned
    and enqueue its parameters; returns their numbers."""
    from optuna.trial import TrialState

    numbers = []
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(t._trial_id, ORPHANED, True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(dict(t.params), user_attrs=resume_attrs(t))
        numbers.append(t.number)
    return numbers


def resume_attrs(t) -> dict[str, Any]:
    """The user attrs of the trial that asks ``t``'s values again (it stays the preset trial)."""
    return {"resumes": t.number, **({PRESET_VALUES: True} if t.user_attrs.get(PRESET_VALUES) else {})}


def enqueue_preset_trial(study, values: dict[str, Any]) -> bool:
    """Enqueue ``values`` as the preset trial unless the study has one (asked, waiting or
    orphaned); True if it did."""
    if any(t.user_attrs.get(PRESET_VALUES) for t in study.get_trials(deepcopy=False)):
        return False
    study.enqueue_trial(dict(values), user_attrs={PRESET_VALUES: True})
    return True


def used(study) -> int:
    """Trials that count against the budget (module docstring)."""
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(1 for t in study.get_trials(deepcopy=False, states=done) if not t.user_attrs.get(ORPHANED))
