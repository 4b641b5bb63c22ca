"""``mrseg-bench tune``: hyperparameter search with an equal budget per method (docs/tuning.md).

- ``space``: search spaces (``SEARCH_SPACE`` beside each config class; ``[tune.<method>]``
  preset overrides);
- ``objective``: the primary validation metric a trial is scored on, read from its run folder;
- ``study``: the Optuna studies in ``<out>/<experiment>/tune/journal.log`` (orphans, budget);
- ``hook``: the per-epoch hook a trial's run reports to (pruning);
- ``driver``: ask a batch, run it as a grid on an executor, tell each trial;
- ``outputs``: the tuned preset, the trial table and the figure.

This package imports no method, so config modules may import ``space``.
"""
