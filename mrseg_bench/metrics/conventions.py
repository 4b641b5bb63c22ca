"""Metric conventions by paper name: ``run.convention=standard|dpersona|phiseg|ccdm|flowssn``.

A convention fixes every choice on which published tables disagree (docs/metrics-conventions.md
has the table of papers, conventions and published numbers):

- ``overlap``: the IoU/Dice empty-mask rule of ``pairwise`` (``"standard"``: two empty masks have
  IoU = Dice = 1; ``"dpersona"``: the D-Persona code's +1e-8 smoothing, two empty masks IoU 0);
- ``ged``: ``"squared"`` (GED^2 = 2 E d(S,Y) - E d(S,S') - E d(Y,Y'), what Kohl et al., PHiSeg,
  D-Persona's and Flow-SSN's code report, and MedFM's column "GED^2") or ``"root"`` (its square
  root, GED proper; negative values, possible with the "distinct" estimator, clamp to 0);
- ``hm_iou``: ``"replicate"`` (both sets tiled to lcm(N, R), matched one-to-one: Kohl 2019, MoSE,
  CCDM) or ``"best_of_n"`` (the N x R IoU matrix matched directly, so only the min(N, R) best
  matched samples count: Flow-SSN's code, about 0.87 where replication gives about 0.6);
- ``soft_dice``: the thresholds of Dice_soft (``(0.1, 0.3, 0.5, 0.7, 0.9)``: QUBIQ, D-Persona,
  AmbiSSL; ``(0.5,)``: a single threshold, Flow-SSN's "Dice" of the mean prediction against the
  fused raters);
- ``n_samples``: the paper's number of samples per image, shown in the docs; the run's own N
  (``run.n_samples``) is what is scored, and the diversity table's caption states it.
"""

from __future__ import annotations

from dataclasses import dataclass

SOFT_THRESHOLDS: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
GED_FORMS: tuple[str, ...] = ("squared", "root")
HM_IOU_MATCHINGS: tuple[str, ...] = ("replicate", "best_of_n")


@dataclass(frozen=True)
class Convention:
    """One paper's metric choices (module docstring)."""

    name: str
    overlap: str
    ged: str = "squared"
    hm_iou: str = "replicate"
    soft_dice: tuple[float, ...] = SOFT_THRESHOLDS
    n_samples: int | None = None
    source: str = ""

    def describe(self) -> str:
        """One ASCII line for captions (LaTeX-safe): the choices that differ between conventions."""
        empty = "two empty masks IoU 1" if self.overlap == "standard" else "IoU = inter / (union + 1e-8)"
        ged = "GED^2" if self.ged == "squared" else "GED (square root of GED^2)"
        hm = "HM-IoU sets replicated to lcm(N, R)" if self.hm_iou == "replicate" else \
            "HM-IoU best min(N, R) pairs of the N x R matching"
        soft = ("Dice_soft over t in {" + ", ".join(f"{t:g}" for t in self.soft_dice) + "}"
                if len(self.soft_dice) > 1 else f"Dice_soft at the single threshold {self.soft_dice[0]:g}")
        return f"{empty}; {ged}; {hm}; {soft}"


CONVENTION_SPECS: dict[str, Convention] = {c.name: c for c in (
    Convention("standard", "standard", source="this toolkit's default (Kohl / PHiSeg empty-mask rule)"),
    Convention("dpersona", "dpersona", n_samples=10,
               source="D-Persona (Wu et al., CVPR 2024) code; N = 10 on LIDC, 50 on NPC-170"),
    Convention("phiseg", "standard", n_samples=100,
               source="PHiSeg (Baumgartner et al. 2019) evaluation, as SSN reports it: GED^2 with N = 100"),
    Convention("ccdm", "standard", n_samples=16,
               source="CCDM (Zbinden et al., ICCV 2023) code: GED^2 and lcm-replicated HM-IoU, N = 16"),
    Convention("flowssn", "standard", hm_iou="best_of_n", soft_dice=(0.5,), n_samples=100,
               source="Flow-SSN (ICCV 2025) code: GED^2, best-of-N HM-IoU (empty pair = 1), "
                      "Dice of the mean at 0.5, N = 100"),
)}
CONVENTION_NAMES: tuple[str, ...] = tuple(CONVENTION_SPECS)


def resolve_convention(name: str) -> Convention:
    """The ``Convention`` named ``name``; ValueError listing the names otherwise."""
    try:
        return CONVENTION_SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"convention must be one of {list(CONVENTION_NAMES)}, got {name!r}") from None


def check_choice(option: str, value: str | None, choices: tuple[str, ...]) -> str | None:
    if value is not None and value not in choices:
        raise ValueError(f"{option} must be one of {list(choices)}, got {value!r}")
    return value


def check_thresholds(thresholds: tuple[float, ...] | None) -> tuple[float, ...] | None:
    """None, or a non-empty tuple of thresholds in [0, 1)."""
    if thresholds is None:
        return None
    ts = tuple(float(t) for t in thresholds)
    if not ts or any(not 0.0 <= t < 1.0 for t in ts):
        raise ValueError(f"soft-Dice thresholds must be a non-empty list of values in [0, 1), got {thresholds!r}")
    return ts


def convention_caption(name: str, n_values: list[int] | None = None) -> str:
    """Caption text: ``"Convention flowssn: ...; N = 100 samples per image."``"""
    try:
        text = f"Convention {name}: {resolve_convention(name).describe()}"
    except ValueError:
        text = f"Convention {name}"
    ns = sorted({int(n) for n in n_values or []})
    if ns:
        text += "; N = " + (str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}") + " samples per image"
    return text + "."
