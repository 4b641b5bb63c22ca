"""Metric registration and ``MetricSuite``: score a Prediction by what it declares.

Each metric is a frozen ``MetricSpec`` registered in ``mrseg_bench.registry.METRICS`` under its
name. ``spec.fn(ctx)`` takes a ``MetricContext`` and returns ``[B]`` (or ``[B,R]`` when
``per_rater``). A third-party metric registers the same way (``METRICS.add(name, MetricSpec(...))``).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..registry import METRICS
from ..types import Capability, Prediction
from . import functional as F
from . import matching as M
from .context import GED_ESTIMATORS, NCC_MAPS, MetricContext, check_option
from .conventions import resolve_convention

Tensor = torch.Tensor


# Report tables a metric can name in ``MetricSpec.table`` (a plugin may name a new one: the
# report then makes a table of that name). "" means: the table of the required capability.
CAPABILITY_TABLES: dict[Capability, str] = {
    Capability.DIVERSE: "diversity",
    Capability.PERSONALIZED: "personalization",
    Capability.CONSENSUS: "consensus",
}
N_SAMPLES_METRIC = "n_samples"  # the number of samples N a diverse method was scored with


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric and everything a report needs to show it.

    - ``fn(ctx) -> [B]`` (``[B,R]`` if ``per_rater``); ``requires``: the capability whose tensor
      it scores; ``higher_is_better``: its direction; ``description``: one line for ``list``.
    - ``descriptive``: a quantity to compare rather than rank (sample diversity vs rater
      disagreement): no arrow, never bold, and the gate fails a change either way.
    - ``table``: the report table it belongs to ("" = by capability: diversity /
      personalization / consensus; any other name makes its own table); ``show=False`` keeps
      it out of tables (stored only, e.g. a per-rater metric whose mean is another metric).
    - ``label`` (column header, default the name), ``fmt`` (format spec of a value),
      ``rater_columns`` (per-rater metrics: one column per rater R1..Rk instead of the mean
      over raters), ``significance`` (test against the reference method), ``summary`` (a column
      of the terminal summary after ``run``), ``gate_tolerance`` (the gate's default absolute
      tolerance for it; None: the baseline's default), ``order`` (column order in its table).
    """

    name: str
    fn: Callable[[MetricContext], Tensor]
    requires: Capability
    higher_is_better: bool
    per_rater: bool
    description: str
    descriptive: bool = False
    table: str = ""
    label: str = ""
    fmt: str = ".3f"
    show: bool = True
    rater_columns: bool = False
    significance: bool = True
    summary: bool = False
    gate_tolerance: float | None = None
    order: float = 1000.0

    @property
    def table_name(self) -> str:
        return self.table or CAPABILITY_TABLES[Capability(self.requires)]

    @property
    def column_label(self) -> str:
        return self.label or self.name


def n_samples_ctx(ctx: MetricContext) -> Tensor:
    """N, the number of samples of each case ``[B]`` (what every sample-count-dependent metric
    was computed with)."""
    return torch.full((ctx.batch_size,), float(ctx.num_samples), dtype=ctx.dtype,
                      device=ctx.raters.device)


_D, _P, _C = Capability.DIVERSE, Capability.PERSONALIZED, Capability.CONSENSUS
BUILTIN_SPECS: tuple[MetricSpec, ...] = tuple(
    dataclasses.replace(spec, order=float(i)) for i, spec in enumerate((
        MetricSpec(N_SAMPLES_METRIC, n_samples_ctx, _D, True, False,
                   "number of samples N scored per case", descriptive=True, label="N", fmt=".0f",
                   significance=False),
        MetricSpec("ged", F.ged_ctx, _D, False, False,
                   "squared generalised energy distance, d = 1 - IoU (lower is better)",
                   label="GED", summary=True),
        MetricSpec("dice_soft", F.dice_soft_ctx, _D, True, False,
                   "mean over t in {.1,.3,.5,.7,.9} of Dice(mean sample > t, mean rater > t)",
                   label="Dice_soft", summary=True),
        MetricSpec("dice_match", M.dice_match_ctx, _D, True, False,
                   "Hungarian-matched rater/sample Dice, mean over all raters (unmatched: 0)",
                   label="Dice_match", summary=True),
        MetricSpec("dice_max", M.dice_max_ctx, _D, True, False,
                   "mean over samples of the best Dice with any rater", label="Dice_max"),
        MetricSpec("dice_max_reverse", M.dice_max_reverse_ctx, _D, True, False,
                   "mean over raters of the best Dice with any sample", label="Dice_max_rev"),
        MetricSpec("hm_iou", M.hm_iou_ctx, _D, True, False,
                   "Hungarian-matched IoU, sets replicated to lcm(N, R) (Kohl 2019 / MoSE)",
                   label="HM-IoU"),
        MetricSpec("ncc", F.ncc_ctx, _D, True, False,
                   "PHiSeg NCC between the sample uncertainty map and each rater's error map",
                   label="NCC"),
        MetricSpec("sample_rater_dice", M.sample_rater_dice_ctx, _D, True, True,
                   "Dice of rater r against a fixed (non-personalised) sample, mean over samples",
                   show=False),
        MetricSpec("sample_rater_dice_mean", M.sample_rater_dice_mean_ctx, _D, True, False,
                   "mean over valid raters of sample_rater_dice (compare with per_rater_dice_mean)",
                   label="Dice fixed"),
        MetricSpec("sample_diversity", F.sample_diversity_ctx, _D, True, False,
                   "mean 1 - IoU between distinct samples (compare with rater_disagreement)",
                   descriptive=True, label="Sample div."),
        MetricSpec("rater_disagreement", F.rater_disagreement_ctx, _D, False, False,
                   "mean 1 - IoU between distinct valid raters: the data's own ambiguity "
                   "(same for every method; reported beside sample_diversity)", descriptive=True,
                   label="Rater disagr."),
        MetricSpec("per_rater_dice", F.per_rater_dice_ctx, _P, True, True,
                   "Dice of output r against rater r (fixed pairing)", label="R",
                   rater_columns=True),
        MetricSpec("per_rater_dice_mean", F.per_rater_dice_mean_ctx, _P, True, False,
                   "mean over valid raters of per_rater_dice", label="Mean", summary=True),
        MetricSpec("per_rater_dice_matched", M.per_rater_dice_matched_ctx, _P, True, True,
                   "per-rater Dice after Hungarian matching of outputs to raters (D-Persona "
                   "protocol); the table shows its mean over raters", label="Matched",
                   gate_tolerance=0.05),
        MetricSpec("consensus_dice", F.consensus_dice_ctx, _C, True, False,
                   "Dice of consensus > 0.5 against the valid raters' majority vote (ties -> 1)",
                   label="Consensus Dice", summary=True),
        MetricSpec("consensus_dice_soft", F.consensus_dice_soft_ctx, _C, True, False,
                   "Dice_soft thresholds on the consensus probability vs the mean rater mask",
                   label="Consensus Dice_soft"),
    )))
for _spec in BUILTIN_SPECS:
    METRICS.add(_spec.name, _spec)


def metric_specs() -> list[MetricSpec]:
    """Every registered MetricSpec (plugins included) in column order: ``order``, then name."""
    specs = [obj for _, obj in METRICS.items() if isinstance(obj, MetricSpec)]
    return sorted(specs, key=lambda s: (s.order, s.name))


def _as_capabilities(caps: Iterable[Capability | str]) -> frozenset[Capability]:
    out = set()
    for c in caps:
        try:
            out.add(Capability(c))
        except ValueError:
            known = [k.value for k in Capability]
            raise ValueError(f"capabilities: unknown capability {c!r}; known: {known}") from None
    return frozenset(out)


class MetricSuite:
    """Scores the metrics named (comma list / fnmatch patterns / sequence; default: all
    registered) on the outputs a prediction declares (``pred.sample_weights`` included).
    ``convention``: a name of ``conventions.CONVENTION_SPECS`` (standard, dpersona, phiseg,
    ccdm, flowssn); ``ged_estimator`` ("all_pairs" | "distinct") and ``ncc_maps`` ("soft" |
    "binary"): see ``functional.ged`` and ``functional.ncc``."""

    def __init__(self, names: Sequence[str] | str | None = None, convention: str = "standard",
                 threshold: float = 0.5, ged_estimator: str = "all_pairs",
                 ncc_maps: str = "soft") -> None:
        self.convention = resolve_convention(convention).name  # a paper's name (conventions.py)
        self.ged_estimator = check_option("ged_estimator", ged_estimator, GED_ESTIMATORS)
        self.ncc_maps = check_option("ncc_maps", ncc_maps, NCC_MAPS)
        if not 0.0 <= float(threshold) < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
        self.threshold = float(threshold)
        self.names: list[str] = METRICS.resolve(names) if names is not None else METRICS.names()
        for n in self.names:
            if not isinstance(METRICS.get(n), MetricSpec):
                raise ValueError(f"metric {n!r} is registered as {type(METRICS.get(n)).__name__}, "
                                 "not a MetricSpec")

    # ---- lookups ----------------------------------------------------------------------
    @staticmethod
    def spec(name: str) -> MetricSpec:
        """The registered spec (unknown names raise RegistryError listing the known ones)."""
        return METRICS.get(name)

    @staticmethod
    def higher_is_better(name: str) -> bool:
        return METRICS.get(name).higher_is_better

    def specs(self) -> list[MetricSpec]:
        return [METRICS.get(n) for n in self.names]

    # ---- scoring ----------------------------------------------------------------------
    def compute(self, pred: Prediction, raters: Tensor, rater_valid: Tensor | None = None,
                capabilities: Iterable[Capability | str] | None = None) -> dict[str, Tensor]:
        """``{metric: [B] or [B,R] tensor}`` for every suite metric whose required capability
        is declared (``capabilities``, default ``pred.capabilities()``). A declared capability
        whose tensor is missing raises ValueError; an undeclared tensor is ignored."""
        caps = pred.capabilities() if capabilities is None else _as_capabilities(capabilities)
        tensors = {_D: pred.samples, _P: pred.personalized, _C: pred.consensus}
        missing = sorted(c.value for c in caps if tensors[c] is None)
        if missing:
            raise ValueError(
                f"prediction declares capabilities {missing} but has no tensor for them "
                f"(samples={_shape(pred.samples)}, personalized={_shape(pred.personalized)}, "
                f"consensus={_shape(pred.consensus)})"
            )
        with torch.no_grad():
            ctx = MetricContext.build(
                raters,
                samples=pred.samples if _D in caps else None,
                rater_valid=rater_valid,
                personalized=pred.personalized if _P in caps else None,
                consensus=pred.consensus if _C in caps else None,
                convention=self.convention,
                threshold=self.threshold,
                sample_weights=pred.sample_weights if _D in caps else None,
                ged_estimator=self.ged_estimator,
                ncc_maps=self.ncc_maps,
            )
            return {s.name: s.fn(ctx) for s in self.specs() if s.requires in caps}

    def score(self, pred: Prediction, raters: Tensor, rater_valid: Tensor | None = None,
              case_ids: Sequence[str] | None = None,
              capabilities: Iterable[Capability | str] | None = None) -> list[dict[str, Any]]:
        """Tidy rows ``{"case_id", "metric", "rater", "value"}``: ``rater`` is None for per-case
        metrics; per-rater metrics give one row per VALID rater (invalid raters are not
        measured, so they have no row). A case with no valid rater has value NaN."""
        values = self.compute(pred, raters, rater_valid, capabilities)
        b = int(raters.shape[0])
        ids = [str(i) for i in range(b)] if case_ids is None else [str(c) for c in case_ids]
        if len(ids) != b:
            raise ValueError(f"case_ids has {len(ids)} entries for a batch of {b} cases")
        valid = (torch.ones(raters.shape[:2], dtype=torch.bool) if rater_valid is None
                 else rater_valid.detach().cpu().bool()).tolist()
        rows: list[dict[str, Any]] = []
        for name, t in values.items():
            vals = t.detach().cpu().double().tolist()
            if METRICS.get(name).per_rater:
                rows.extend({"case_id": ids[i], "metric": name, "rater": r, "value": v}
                            for i, case in enumerate(vals) for r, v in enumerate(case)
                            if valid[i][r])
            else:
                rows.extend({"case_id": ids[i], "metric": name, "rater": None, "value": v}
                            for i, v in enumerate(vals))
        return rows

    @staticmethod
    def summarize(rows: Iterable[dict[str, Any]]) -> dict[str, float]:
        """Mean over cases per metric, NaN values left out (NaN if none). A per-rater metric
        gives ``name`` (per case mean over its raters, then mean over cases) and ``name[r]``
        (mean over cases of rater r)."""
        case_vals: dict[str, list[float]] = defaultdict(list)
        rater_case: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for row in rows:
            name, v = str(row["metric"]), float(row["value"])
            if row.get("rater") is None:
                case_vals[name].append(v)
            else:
                case_vals[f"{name}[{int(row['rater'])}]"].append(v)
                rater_case[name][str(row["case_id"])].append(v)
        for name, cases in rater_case.items():
            case_vals[name] = [_nanmean(vs) for vs in cases.values()]
        return {k: _nanmean(v) for k, v in sorted(case_vals.items())}


def _nanmean(values: Iterable[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _shape(t: Tensor | None) -> tuple[int, ...] | None:
    return None if t is None else tuple(t.shape)
