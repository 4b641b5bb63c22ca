"""Model selection: which validation value picks each stage's best epoch (``run.select``).

``run.select`` is a comma list of rules, each ``VALUE`` or ``TARGET=VALUE``:

- ``VALUE``: ``auto`` (the method's primary metric, below), ``loss`` (the mean validation
  loss) or a registered metric name (``ged``, ``dice_match``, ``per_rater_dice_matched``, ...);
- ``TARGET``: a method name or fnmatch pattern (``dpersona``, ``'fusion.*'``), optionally with a
  stage: ``dpersona:stage1``; a bare ``:stage1`` is that stage of every method.

Rules apply left to right and a later matching rule wins: ``"auto,probunet=dice_match,
dpersona:stage1=ged"``. The default is ``auto``.

**Primary metric** (``primary_metric``), declared by what a method produces, checked in this
order (the first capability the method has wins):

1. ``personalized`` -> ``per_rater_dice_matched`` (matched per-rater Dice, max);
2. ``diverse`` -> ``ged`` (min);
3. ``consensus`` -> ``consensus_dice`` (max).

A personalised method is judged on its personalised outputs (the study's per-rater table), so
that capability comes first. A stage that trains something else declares its own metric through
``Method.select_metric`` (D-Persona's stage 1 trains the sampler: ``dice_match``, as the
reference selects it, but on the validation split). The metric's direction (min/max) comes from
its ``MetricSpec``. Selection only ever reads the validation split.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from ..types import Capability

AUTO, LOSS = "auto", "loss"
PRIMARY_BY_CAPABILITY: tuple[tuple[Capability, str], ...] = (
    (Capability.PERSONALIZED, "per_rater_dice_matched"),
    (Capability.DIVERSE, "ged"),
    (Capability.CONSENSUS, "consensus_dice"),
)


@dataclass(frozen=True)
class Selection:
    """The value that picks a stage's best epoch: ``metric`` ("loss" or a metric name) and
    ``mode`` ("min" or "max")."""

    metric: str
    mode: str

    def better(self, score: float, best: float | None) -> bool:
        if best is None:
            return True
        return score < best if self.mode == "min" else score > best


@dataclass(frozen=True)
class Rule:
    method: str  # fnmatch pattern ("*": every method)
    stage: str | None  # None: every stage
    value: str


def parse_select(text: str) -> list[Rule]:
    """The rules of a ``run.select`` string; ValueError (one line) on a malformed one."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"run.select={text!r}: give auto, loss, a metric name or TARGET=VALUE rules")
    rules = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            raise ValueError(f"run.select={text!r}: empty rule")
        target, eq, value = item.rpartition("=")
        value = value.strip()
        if not value or (eq and not target.strip()):
            raise ValueError(f"run.select={text!r}: rule {item!r} needs a value (and a target before '=')")
        method, colon, stage = target.strip().partition(":")
        if colon and not stage:
            raise ValueError(f"run.select={text!r}: rule {item!r} names no stage after ':'")
        rules.append(Rule(method.strip() or "*", stage.strip() or None, value))
    return rules


def primary_metric(capabilities) -> str:
    """The primary validation metric of a method with ``capabilities`` (module docstring)."""
    caps = {Capability(c) for c in capabilities}
    for cap, name in PRIMARY_BY_CAPABILITY:
        if cap in caps:
            return name
    raise ValueError(f"no primary metric for capabilities {sorted(c.value for c in caps)}")


def _selection(value: str) -> Selection:
    if value == LOSS:
        return Selection(LOSS, "min")
    from ..metrics.suite import METRICS
    from ..registry import RegistryError

    try:
        spec = METRICS.get(value)
    except RegistryError:
        raise ValueError(f"unknown selection {value!r}: give auto, loss or a metric "
                         f"({', '.join(METRICS.names())})") from None
    return Selection(value, "max" if spec.higher_is_better else "min")


def resolve_selection(select: str, method_name: str, method, stage) -> Selection:
    """The selection of ``stage`` of ``method`` (registered as ``method_name``) under ``select``."""
    value = AUTO
    for rule in parse_select(select):
        if fnmatch.fnmatchcase(method_name, rule.method) and rule.stage in (None, stage.name):
            value = rule.value
    if value == AUTO:
        value = method.select_metric(stage)
    return _selection(value)


def check_selection(select: str, method_name: str, method) -> dict[str, Selection]:
    """Every stage's selection, checked before anything runs: ValueError (one line, naming the
    method and stage) for an unknown metric, one the method's outputs cannot give, a stage a
    rule names that the method does not have, or a non-scalar (per-rater only) name."""
    from ..metrics.suite import METRICS

    stages = method.stages()
    names = {s.name for s in stages}
    for rule in parse_select(select):
        if rule.stage is not None and fnmatch.fnmatchcase(method_name, rule.method) and rule.stage not in names \
                and rule.method != "*":
            raise ValueError(f"run.select: method {method_name!r} has no stage {rule.stage!r} "
                             f"(its stages: {', '.join(sorted(names))})")
    caps = {Capability(c) for c in method.info.capabilities}
    out = {}
    for stage in stages:
        try:
            sel = resolve_selection(select, method_name, method, stage)
        except ValueError as exc:
            raise ValueError(f"run.select: method {method_name!r} stage {stage.name!r}: "
                             f"{str(exc).splitlines()[0]}") from None
        if sel.metric != LOSS:
            spec = METRICS.get(sel.metric)
            if Capability(spec.requires) not in caps:
                raise ValueError(f"run.select: method {method_name!r} stage {stage.name!r}: metric "
                                 f"{sel.metric!r} needs {Capability(spec.requires).value} outputs; the method "
                                 f"produces {', '.join(sorted(c.value for c in caps))}")
            if spec.descriptive:
                raise ValueError(f"run.select: metric {sel.metric!r} describes the data or the samples; it "
                                 "cannot rank checkpoints")
        out[stage.name] = sel
    return out
