"""The embedded default dataset: procedural CT/MR-like patches with four raters of known style.

Two generator versions (option ``version``): version 2 (``synthetic_v2``: objects the image
determines, style and ambiguity as the two declared sources of disagreement, difficulty knobs)
and version 1, described here and kept bit-identical so earlier numbers stay reproducible.

Case ``i`` depends only on ``(seed, i)`` (``numpy.random.default_rng([seed, i])``), is generated on
the fly (vectorised numpy/scipy, no files) and cached in memory when ``cache=True``.

Image (1 channel, ``image_size`` square): smooth low- and mid-frequency texture plus white noise,
and 1-3 lesions: star-shaped blobs ``rho < r0 * (1 + sum_k a_k cos(k theta + phi_k))`` (k = 2..4),
each with its own contrast ``c ~ U(0.15, 1)``, blurred into the image. The union of the lesions is
the hidden TRUE object. Each lesion has a radial signed distance ``d = rho - r(theta)`` (pixels,
negative inside). Every annotation adds a smooth random boundary jitter ``J(theta)`` (k = 1..3,
amplitude ``jitter * image_size``) to ``d`` and then applies its rater's style:

===  ===========  ====================================================================
r    name         style (``RaterStyle``)
===  ===========  ====================================================================
0    tight        erodes: ``d + J < -0.045 S`` (about 3 px at 64, 6 px at 128)
1    generous     dilates: ``d + J < +0.045 S``
2    smooth       Gaussian-blurs the object (sigma 0.04 S) and keeps ``blur > 0.5``:
                  rounded outlines, thin protrusions and gaps between lesions smoothed
3    strong-only  annotates the true outline but skips faint lesions (contrast < 0.5): an
                  empty mask when every lesion is faint (about 1 case in 4)
===  ===========  ====================================================================

Mean foreground area relative to the true object (64 px, 200 cases): tight 0.35, strong-only
0.6, smooth 0.9, generous 2.0, so smallest first tight < strong-only < smooth < generous
(``EXPECTED_AREA_ORDER``). ``oracle_dice`` gives, per rater, the Dice that the rater's style
applied to the hidden true object (no jitter) reaches against the rater's masks: the ceiling of a
personalised method; ``shared_oracle_dice`` the Dice of the true object itself against each rater,
what a single consensus prediction can reach. Both are the report's reference rows
(``reference_scores``, computed on each run's test cases).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from ..types import DatasetInfo, MultiRaterSample
from . import mask_scores as ms
from . import synthetic_v2 as v2
from ._common import dataset_factory
from .base import MultiRaterDataset

MAX_LESIONS = 3
VERSIONS = (1, 2)  # part of the data fingerprint: a new version when the generated content changes


@dataclass(frozen=True)
class RaterStyle:
    """How one synthetic rater turns the hidden object into a mask (lengths in units of the
    image side ``S``): ``offset`` moves the boundary outwards (negative erodes); ``blur_sigma`` > 0
    blurs the object and keeps ``blur > level``; lesions with contrast below ``min_contrast`` are
    skipped; ``jitter`` is the amplitude of the per-annotation random boundary jitter."""

    name: str
    kind: Literal["offset", "blur_threshold", "contrast_gate"]
    offset: float = 0.0
    blur_sigma: float = 0.0
    level: float = 0.5
    min_contrast: float = 0.0
    jitter: float = 0.012
    description: str = ""


DEFAULT_STYLES: tuple[RaterStyle, ...] = (
    RaterStyle("tight", "offset", offset=-0.045, description="erodes the object"),
    RaterStyle("generous", "offset", offset=0.045, description="dilates the object"),
    RaterStyle("smooth", "blur_threshold", blur_sigma=0.04, level=0.5,
               description="thresholds the blurred object at 0.5: rounded outlines"),
    RaterStyle("strong-only", "contrast_gate", min_contrast=0.5,
               description="skips faint lesions (contrast < 0.5)"),
)
EXPECTED_AREA_ORDER: tuple[int, ...] = (0, 3, 2, 1)  # rater indices, smallest mean area first


_dice = ms.dice  # Dice over the last two axes; both empty -> 1


class SyntheticMultiRater(MultiRaterDataset):
    """Procedural multi-rater set (see module docstring). Each case is its own group (patient)."""

    def __init__(self, num_cases: int = 240, image_size: int = 128, num_raters: int = 4,
                 seed: int = 0, cache: bool = True, version: int = 1,
                 knobs: v2.Knobs | None = None) -> None:
        if num_cases < 1:
            raise ValueError(f"synthetic: num_cases must be >= 1, got {num_cases}")
        if image_size < 16:
            raise ValueError(f"synthetic: image_size must be >= 16, got {image_size}")
        if not 1 <= num_raters <= len(DEFAULT_STYLES):
            raise ValueError(f"synthetic: num_raters must be in 1..{len(DEFAULT_STYLES)}, got {num_raters}")
        if seed < 0:
            raise ValueError(f"synthetic: seed must be >= 0, got {seed}")
        if version not in VERSIONS:
            raise ValueError(f"synthetic: version must be one of {', '.join(map(str, VERSIONS))}, got {version}")
        knobs = knobs if knobs is not None else v2.Knobs()
        if version == 1 and knobs != v2.Knobs():
            changed = [k for k, v in knobs.as_dict().items() if v != getattr(v2.Knobs(), k)]
            raise ValueError(f"synthetic: option(s) {', '.join(changed)} apply to version 2 only "
                             f"(set version = 2)")
        knobs.check()
        self.num_cases, self.size, self.seed, self.version, self.knobs = num_cases, image_size, seed, version, knobs
        self.rater_styles: list[RaterStyle] | list[v2.Style] = list((DEFAULT_STYLES if version == 1 else v2.STYLES)[:num_raters])
        self.expected_area_order = tuple(r for r in EXPECTED_AREA_ORDER if r < num_raters)
        self.info = DatasetInfo("synthetic", 1, num_raters, tuple(s.name for s in self.rater_styles),
                                (image_size, image_size), "fixed")
        self.cache = cache
        self.in_memory = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._ids = [f"syn{seed}-{i:05d}" for i in range(num_cases)]
        s = np.arange(image_size, dtype=np.float64) + 0.5
        self._yy, self._xx = np.meshgrid(s, s, indexing="ij")

    @property
    def case_ids(self) -> list[str]:
        return self._ids

    @property
    def group_ids(self) -> list[str]:
        return self._ids

    def __len__(self) -> int:
        return self.num_cases

    def fingerprint_params(self) -> dict[str, Any]:
        """The generator parameters (the content depends on nothing else; ``cache`` does not
        change it): the generator version, and for version 2 its knobs. A generator change that
        changes the output is a new version."""
        if self.version == 1:  # exactly the keys version 1 always had: its run identities stay
            return {"generator_version": 1, "num_cases": self.num_cases, "image_size": self.size,
                    "seed": self.seed, "rater_styles": [dataclasses.asdict(s) for s in self.rater_styles]}
        return {"generator_version": 2, "num_cases": self.num_cases, "image_size": self.size,
                "seed": self.seed, "knobs": self.knobs.as_dict(),
                "rater_styles": [dataclasses.asdict(s) for s in self.rater_styles]}

    # -- generation -------------------------------------------------------------------------
    def _draw(self, index: int) -> dict[str, np.ndarray]:
        """All random numbers of case ``index``, drawn in a fixed order."""
        if not 0 <= index < self.num_cases:
            raise IndexError(f"synthetic: index {index} out of range for {self.num_cases} cases")
        rng = np.random.default_rng([self.seed, index])
        S, L, R = self.size, MAX_LESIONS, len(DEFAULT_STYLES)
        return {
            "n": rng.choice(np.arange(1, L + 1), p=[0.5, 0.35, 0.15]),
            "center": rng.uniform(0.25, 0.75, size=(L, 2)) * S,
            "radius": rng.uniform(0.06, 0.15, size=L) * S,
            "harm_amp": rng.uniform(0.0, 0.12, size=(L, 3)),
            "harm_phase": rng.uniform(0, 2 * np.pi, size=(L, 3)),
            "contrast": rng.uniform(0.15, 1.0, size=L),
            "tex_low": rng.standard_normal((S, S)),
            "tex_mid": rng.standard_normal((S, S)),
            "noise": rng.standard_normal((S, S)),
            "jit_amp": rng.standard_normal((R, L, 3)) / np.sqrt(3),
            "jit_phase": rng.uniform(0, 2 * np.pi, size=(R, L, 3)),
        }

    def _geometry(self, p: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Radial signed distance d [L,H,W] (+inf for unused lesions), the angular basis
        ``[cos k theta, sin k theta]`` for k = 1..4 as float32 [L,8,H*W], and the in-use flag [L]."""
        S = self.size
        dy = (self._yy[None] - p["center"][:, 0, None, None]).astype(np.float32)
        dx = (self._xx[None] - p["center"][:, 1, None, None]).astype(np.float32)
        rho = np.hypot(dy, dx)
        safe = np.maximum(rho, 1e-6)
        c1, s1 = dx / safe, dy / safe  # cos, sin theta; multiple angles by recurrence
        c2, s2 = c1 * c1 - s1 * s1, 2 * c1 * s1
        c3, s3 = c1 * c2 - s1 * s2, s1 * c2 + c1 * s2
        c4, s4 = c2 * c2 - s2 * s2, 2 * c2 * s2
        basis = np.stack([c1, c2, c3, c4, s1, s2, s3, s4], axis=1).reshape(MAX_LESIONS, 8, S * S)
        # einsum (a plain C loop) rather than matmul: multithreaded BLAS stalls on a busy machine
        shape = 1 + np.einsum("lk,lkp->lp", self._fourier(p["harm_amp"], p["harm_phase"], first_k=2), basis)
        d = rho - p["radius"][:, None, None].astype(np.float32) * shape.reshape(MAX_LESIONS, S, S)
        used = np.arange(MAX_LESIONS) < p["n"]
        return np.where(used[:, None, None], d, np.float32(np.inf)), basis, used

    @staticmethod
    def _fourier(amp: np.ndarray, phase: np.ndarray, first_k: int) -> np.ndarray:
        """Coefficients [..., 8] on the basis above of ``sum_k amp_k cos(k theta + phase_k)`` for
        k = first_k, first_k + 1, ...: ``a cos(phi) cos(k theta) - a sin(phi) sin(k theta)``."""
        out = np.zeros((*amp.shape[:-1], 8), dtype=np.float32)
        ks = np.arange(first_k, first_k + amp.shape[-1]) - 1
        out[..., ks] = amp * np.cos(phase)
        out[..., ks + 4] = -amp * np.sin(phase)
        return out

    def _annotate(self, p: dict[str, np.ndarray], d: np.ndarray, basis: np.ndarray,
                  used: np.ndarray, jitter: bool) -> np.ndarray:
        """Masks [R,H,W] bool from each rater's style (``jitter=False``: the oracle masks)."""
        S = self.size
        R = len(self.rater_styles)
        if jitter:
            amp = np.array([st.jitter for st in self.rater_styles])[:, None, None] * S
            coef = self._fourier(amp * p["jit_amp"][:R], p["jit_phase"][:R], first_k=1)  # [R,L,8]
            jit = np.einsum("rlk,lkp->rlp", coef, basis)  # [R,L,H*W]
            base = d[None] + jit.reshape(R, *d.shape)  # [R,L,H,W]
        else:
            base = np.broadcast_to(d[None], (R, *d.shape))
        out = np.empty((R, S, S), dtype=bool)
        for r, st in enumerate(self.rater_styles):  # 4 fixed styles: each a vectorised expression
            keep = used & (p["contrast"] >= st.min_contrast)
            inside = (base[r] < st.offset * S) & keep[:, None, None]
            obj = inside.any(0)
            if st.kind == "blur_threshold":
                obj = gaussian_filter(obj.astype(np.float64), st.blur_sigma * S, mode="constant") > st.level
            out[r] = obj
        return out

    def _render(self, p: dict[str, np.ndarray], d: np.ndarray) -> np.ndarray:
        """The image [H,W] float32: texture + blurred lesions + noise."""
        S = self.size
        low = gaussian_filter(p["tex_low"], S / 12, mode="wrap")
        mid = gaussian_filter(p["tex_mid"], max(S / 64, 0.5), mode="wrap")
        low *= 0.12 / max(low.std(), 1e-8)
        mid *= 0.05 / max(mid.std(), 1e-8)
        lesions = ((d < 0) * p["contrast"][:, None, None]).sum(0)
        lesions = gaussian_filter(lesions, max(S / 96, 0.5), mode="constant")
        return (0.3 + low + mid + 0.6 * lesions + 0.04 * p["noise"]).astype(np.float32)

    def _v2_case(self, index: int) -> tuple[dict[str, np.ndarray], np.ndarray, v2.Components]:
        if not 0 <= index < self.num_cases:
            raise IndexError(f"synthetic: index {index} out of range for {self.num_cases} cases")
        p = v2.draw(self.seed, index, self.size, self.knobs)
        d, basis = v2.geometry(p, self._yy, self._xx)
        return p, d, v2.components(p, d, basis, self.info.num_raters, self.knobs)

    def true_mask(self, index: int) -> torch.Tensor:
        """The hidden true object of case ``index`` as a bool [H,W] tensor (version 2: the core
        object, with the lobe when ``include_p > 1/2``)."""
        if self.version == 2:
            return torch.from_numpy(self._v2_case(index)[2].truth)
        d, _, _ = self._geometry(self._draw(index))
        return torch.from_numpy((d < 0).any(0))

    def __getitem__(self, index: int) -> MultiRaterSample:
        """Case ``index``. Valid by construction (float32 image [1,S,S], masks from booleans);
        numpy copies rather than torch ops keep this single-threaded inside loader workers."""
        if index < 0:
            index += self.num_cases
        hit = self._cache.get(index)
        if hit is None and self.version == 2:
            p, d, comp = self._v2_case(index)
            hit = (v2.render(p, d)[None], comp.masks.astype(np.uint8))
        elif hit is None:
            p = self._draw(index)
            d, basis, used = self._geometry(p)
            masks = self._annotate(p, d, basis, used, jitter=True).astype(np.uint8)
            hit = (self._render(p, d)[None], masks)
        if self.cache:
            self._cache[index] = hit
        image, masks = hit
        return MultiRaterSample(torch.from_numpy(image.copy()), torch.from_numpy(masks.copy()),
                                torch.ones(masks.shape[0], dtype=torch.bool),
                                self._ids[index], self._ids[index])

    # -- oracles ----------------------------------------------------------------------------
    def _scores(self, indices: list[int] | None) -> dict[str, np.ndarray]:
        """Per case (rows in ``indices`` order): ``oracle``, ``shared``, ``attainable`` [N,R]
        (Dice against the raters' masks) and ``style``, ``ambiguity`` [N] (``mask_scores``)."""
        idx = range(self.num_cases) if indices is None else indices
        out: dict[str, list[np.ndarray]] = {k: [] for k in ("oracle", "shared", "attainable", "style", "ambiguity")}
        for i in idx:  # one case at a time: each case is generated from its own RNG stream
            if self.version == 2:
                c = self._v2_case(i)[2]
                rater, oracle, truth = c.masks, c.oracle, c.truth
                style, amb = ms.style_disagreement(c.core), ms.ambiguity_disagreement(c.core, c.full, self.knobs.include_p)
            else:
                p = self._draw(i)
                d, basis, used = self._geometry(p)
                rater = self._annotate(p, d, basis, used, jitter=True)
                oracle = self._annotate(p, d, basis, used, jitter=False)
                truth = (d < 0).any(0)
                style, amb = ms.style_disagreement(oracle), np.float64(0.0)
            out["oracle"].append(_dice(oracle, rater))
            out["shared"].append(_dice(np.broadcast_to(truth, rater.shape), rater))
            out["attainable"].append(ms.attainable_dice(oracle, rater))
            out["style"].append(style)
            out["ambiguity"].append(amb)
        return {k: np.stack(v) for k, v in out.items()}

    def _oracle_scores(self, indices: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
        sc = self._scores(indices)
        return sc["oracle"], sc["shared"]

    def oracle_dice(self, indices: list[int] | None = None) -> torch.Tensor:
        """Mean Dice per rater [R] of the rater's style applied to the hidden true object (no
        jitter; version 2: with the ambiguous lobe when ``include_p > 1/2``) against that
        rater's masks, over ``indices`` (default: every case). Dice of two empty masks is 1."""
        return torch.from_numpy(self._scores(indices)["oracle"].mean(0))

    def shared_oracle_dice(self, indices: list[int] | None = None) -> torch.Tensor:
        """Mean Dice per rater [R] of the true object itself (one mask for every rater)."""
        return torch.from_numpy(self._scores(indices)["shared"].mean(0))

    def attainable_dice(self, indices: list[int] | None = None) -> torch.Tensor:
        """Mean Dice per rater [R] of the oracle with its outline one pixel off
        (``mask_scores.attainable_dice``): what a model recovering each mask to a pixel reaches."""
        return torch.from_numpy(self._scores(indices)["attainable"].mean(0))

    def disagreement_split(self, indices: list[int] | None = None) -> dict[str, float]:
        """Mean over the cases of the style part and the ambiguity part of rater disagreement
        (``mask_scores.style_disagreement`` / ``ambiguity_disagreement``; version 1 has no
        ambiguity: its part is 0)."""
        sc = self._scores(indices)
        return {"style": float(sc["style"].mean()), "ambiguity": float(sc["ambiguity"].mean())}

    def reference_scores(self, indices: list[int]) -> dict[str, list[float]]:
        """The report's per-rater reference rows for the cases ``indices``
        (``mrseg_bench.references``): ``"oracle"`` = ``oracle_dice``, ``"shared mask"`` =
        ``shared_oracle_dice``; version 2 also ``"attainable"`` = ``attainable_dice``
        (version 1's stored rows stay as they always were)."""
        sc = self._scores(list(indices))
        out = {"oracle": sc["oracle"].mean(0).tolist()}
        if self.version == 2:
            out["attainable"] = sc["attainable"].mean(0).tolist()
        out["shared mask"] = sc["shared"].mean(0).tolist()
        return out

    def data_summary(self, indices: list[int] | None = None) -> dict[str, Any]:
        """What ``mrseg-bench data check`` prints for this set, over ``indices`` (default: every
        case): the generator version and knobs, the mean per-rater Dice of the ``oracle``,
        ``attainable`` and ``shared mask`` references, and the disagreement split."""
        sc = self._scores(indices)
        return {"version": self.version, "knobs": self.knobs.as_dict() if self.version == 2 else {},
                "references": {"oracle": sc["oracle"].mean(0).tolist(),
                               "attainable": sc["attainable"].mean(0).tolist(),
                               "shared mask": sc["shared"].mean(0).tolist()},
                "disagreement_split": {"style": float(sc["style"].mean()),
                                       "ambiguity": float(sc["ambiguity"].mean())}}

    def reference_values(self, indices: list[int]) -> dict[str, float]:
        """Version 2's data-level references for the cases ``indices``: the two parts of rater
        disagreement (``disagreement_split``), as ``"style disagreement"`` and
        ``"ambiguity disagreement"``; none for version 1."""
        if self.version == 1:
            return {}
        split = self.disagreement_split(list(indices))
        return {"style disagreement": split["style"], "ambiguity disagreement": split["ambiguity"]}


@dataset_factory("synthetic")
def synthetic(root: str | Path | None = None, num_cases: int = 240, image_size: int = 128,
              num_raters: int = 4, seed: int = 0, cache: bool = True, version: int = 1,
              contrast: float = 1.0, size: float = 1.0, ambiguity: float = 0.75, include_p: float = 0.5,
              style: float = 1.0, jitter: float = 0.0) -> SyntheticMultiRater:
    """The embedded synthetic set (``root`` is ignored: nothing is read from disk).

    Options: ``num_cases`` (240), ``image_size`` (128; 64 for smoke runs), ``num_raters`` (1..4,
    the first styles), ``seed`` (0; case i depends only on (seed, i)), ``cache`` (True: keep
    generated cases in memory), ``version`` (1; the presets choose 2 where they say so).
    Version 2 only (``synthetic_v2``): ``contrast`` (1: lesion contrast multiplier), ``size`` (1:
    lesion radius multiplier), ``ambiguity`` (0.75: fraction of cases with an ambiguous lobe),
    ``include_p`` (0.5: probability a rater includes it), ``style`` (1: style strength, 0 = every
    rater draws the true outline), ``jitter`` (0: per-annotation boundary jitter, x image side).
    """
    knobs = v2.Knobs(contrast=contrast, size=size, ambiguity=ambiguity, include_p=include_p,
                     style=style, jitter=jitter)
    return SyntheticMultiRater(num_cases=num_cases, image_size=image_size, num_raters=num_raters,
                               seed=seed, cache=cache, version=version, knobs=knobs)
