"""Version 2 of the embedded synthetic set's generator (``synthetic`` option ``version=2``).

The image determines the object, and rater disagreement has exactly two sources, both declared
by the data: *style* (per rater, systematic) and *ambiguity* (per case, random).

Image (1 channel, side ``S``): background ``0.3`` + smooth texture (std 0.04, Gaussian-smoothed
over ``S/12``) + fine texture (std 0.02, over ``S/64``) + white noise (std 0.02), plus the shapes
below rendered at ``0.6 * contrast`` (the highest contrast where shapes overlap) and blurred by
``S/96``. Shapes are star-shaped, ``rho < r (1 + sum_k a_k cos(k theta + phi_k))``, k = 2..4,
``a_k ~ U(0, 0.08)``:

- one or two lesions (probabilities 0.6 / 0.4), radius ``r ~ U(0.16, 0.24) S * size``, centres
  ``U(0.3, 0.7) S``; each lesion is *strong* (probability 0.7, contrast ``U(0.75, 1) * contrast``)
  or *weak* (contrast ``U(0.45, 0.55) * contrast``). At ``contrast=1`` the weakest lesion's edge
  step is 0.27, over thirteen times the white noise and six times the smooth texture's std: no
  lesion near the noise floor. The union of the lesions is the *core* object.
- with probability ``ambiguity`` per case, a *lobe* on lesion 0 (the ambiguous part): radius
  ``U(0.7, 0.9)`` of lesion 0's, centred ``1.15 r`` from lesion 0's centre in a random direction,
  contrast 0.7 of lesion 0's (an edge step of at least 0.19). Each rater includes it
  independently with probability ``include_p``: the only random element of an annotation.

Raters (``STYLES``; lengths in units of ``S``, times ``style``): ``tight`` draws the outline
``0.045 S`` inside, ``generous`` ``0.045 S`` outside, ``smooth`` thresholds the object blurred by
``0.04 S`` at 0.5, ``strong-only`` leaves out weak lesions (and a lobe on a weak lesion). An
included lobe is annotated in the rater's style. ``style=0``: every rater draws the true outline.
``jitter`` (default 0) adds v1's smooth random boundary jitter (amplitude ``jitter * S``) to
every annotation: a third, unstructured source of disagreement, off by default.

Reference masks (``Components``), per case and rater r, all without jitter: ``core[r]`` = r's
style applied to the core object; ``full[r]`` = to the core and the lobe; ``oracle[r]`` =
``full[r]`` when ``include_p > 1/2`` else ``core[r]`` (with one ambiguous part and no jitter this
maximises the expected Dice against r's mask: E Dice(full) - E Dice(core) = (2 p - 1)(1 -
Dice(core, full))); ``truth`` = the unstyled core (and lobe when ``include_p > 1/2``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

K = 3  # shapes: lesion 0, lesion 1, the lobe (on lesion 0)
LOBE = 2
STRONG_MIN = 0.6  # relative contrast separating weak (<= 0.55) from strong (>= 0.75) lesions
LOBE_CONTRAST = 0.7  # the lobe's contrast relative to lesion 0's


@dataclass(frozen=True)
class Style:
    """A v2 rater: ``offset`` (x S) moves the outline outwards (negative: inwards), ``blur``
    (x S) > 0 blurs the object and keeps ``> 0.5``, ``strong_only`` leaves out weak lesions."""

    name: str
    offset: float = 0.0
    blur: float = 0.0
    strong_only: bool = False
    description: str = ""


STYLES: tuple[Style, ...] = (
    Style("tight", offset=-0.045, description="draws the outline 0.045 S inside"),
    Style("generous", offset=0.045, description="draws the outline 0.045 S outside"),
    Style("smooth", blur=0.04, description="thresholds the object blurred by 0.04 S at 0.5: rounded outlines"),
    Style("strong-only", strong_only=True, description="leaves out weak lesions (contrast < 0.6)"),
)


RANGES: dict[str, tuple[float, float, bool]] = {  # knob: (low, high, low excluded)
    "contrast": (0.0, 4.0, True), "size": (0.0, 2.0, True), "ambiguity": (0.0, 1.0, False),
    "include_p": (0.0, 1.0, False), "style": (0.0, 3.0, False), "jitter": (0.0, 0.05, False),
}


@dataclass(frozen=True)
class Knobs:
    """Difficulty knobs of version 2 (module docstring)."""

    contrast: float = 1.0
    size: float = 1.0
    ambiguity: float = 0.75
    include_p: float = 0.5
    style: float = 1.0
    jitter: float = 0.0

    def check(self) -> None:
        """ValueError naming the first knob outside its range (``RANGES``)."""
        for name, (lo, hi, lo_open) in RANGES.items():
            v = float(getattr(self, name))
            if not (np.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi):
                raise ValueError(f"synthetic: {name} must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {v}")

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass
class Components:
    """One case's masks as bool arrays: ``masks`` [R,H,W] (what the raters drew), ``core``,
    ``full``, ``oracle`` [R,H,W] and ``truth`` [H,W] (module docstring), ``has_lobe``."""

    masks: np.ndarray
    core: np.ndarray
    full: np.ndarray
    oracle: np.ndarray
    truth: np.ndarray
    has_lobe: bool


def draw(seed: int, index: int, size: int, knobs: Knobs) -> dict[str, np.ndarray]:
    """All random numbers of case ``index``, in a fixed order from ``default_rng([seed, index, 2])``
    (a stream of its own: version 1 uses ``[seed, index]``). The knobs scale or threshold draws,
    never change their number, so a knob moves each case continuously."""
    rng = np.random.default_rng([seed, index, 2])
    S, R = size, len(STYLES)
    p = {
        "n": rng.choice(np.array([1, 2]), p=[0.6, 0.4]),
        "center": rng.uniform(0.3, 0.7, size=(2, 2)) * S,
        "radius": rng.uniform(0.16, 0.24, size=2) * S * knobs.size,
        "harm_amp": rng.uniform(0.0, 0.08, size=(K, 3)),
        "harm_phase": rng.uniform(0, 2 * np.pi, size=(K, 3)),
        "strong": rng.uniform(size=2) < 0.7,
        "contrast_u": rng.uniform(size=2),
        "lobe_u": rng.uniform(),
        "lobe_angle": rng.uniform(0, 2 * np.pi),
        "lobe_rel": rng.uniform(0.7, 0.9),
        "include_u": rng.uniform(size=R),
        "tex_low": rng.standard_normal((S, S)),
        "tex_mid": rng.standard_normal((S, S)),
        "noise": rng.standard_normal((S, S)),
        "jit_amp": rng.standard_normal((R, K, 3)) / np.sqrt(3),
        "jit_phase": rng.uniform(0, 2 * np.pi, size=(R, K, 3)),
    }
    rel = np.where(p["strong"], 0.75 + 0.25 * p["contrast_u"], 0.45 + 0.1 * p["contrast_u"])
    p["rel_contrast"] = np.append(rel, rel[0])  # [K]: the lobe is gated with its lesion
    p["contrast"] = np.append(rel, LOBE_CONTRAST * rel[0]) * knobs.contrast  # rendered contrast
    p["has_lobe"] = bool(p["lobe_u"] < knobs.ambiguity)
    p["include"] = p["include_u"] < knobs.include_p  # [R]
    lobe_c = p["center"][0] + 1.15 * p["radius"][0] * np.array([np.sin(p["lobe_angle"]), np.cos(p["lobe_angle"])])
    p["shape_center"] = np.vstack([p["center"], lobe_c[None]])  # [K,2] (y, x)
    p["shape_radius"] = np.append(p["radius"], p["lobe_rel"] * p["radius"][0])
    p["used"] = np.array([True, p["n"] > 1, p["has_lobe"]])
    return p


def _fourier(amp: np.ndarray, phase: np.ndarray, first_k: int) -> np.ndarray:
    """Coefficients [..., 8] on the basis [cos k theta, sin k theta] (k = 1..4) of
    ``sum_k amp_k cos(k theta + phase_k)`` for k = first_k, first_k + 1, ..."""
    out = np.zeros((*amp.shape[:-1], 8), dtype=np.float32)
    ks = np.arange(first_k, first_k + amp.shape[-1]) - 1
    out[..., ks] = amp * np.cos(phase)
    out[..., ks + 4] = -amp * np.sin(phase)
    return out


def geometry(p: dict[str, np.ndarray], yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radial signed distance d [K,H,W] in pixels (negative inside; +inf for unused shapes) and
    the angular basis [K,8,H*W]."""
    S = yy.shape[0]
    dy = (yy[None] - p["shape_center"][:, 0, None, None]).astype(np.float32)
    dx = (xx[None] - p["shape_center"][:, 1, None, None]).astype(np.float32)
    rho = np.hypot(dy, dx)
    safe = np.maximum(rho, 1e-6)
    c1, s1 = dx / safe, dy / safe
    c2, s2 = c1 * c1 - s1 * s1, 2 * c1 * s1
    c3, s3 = c1 * c2 - s1 * s2, s1 * c2 + c1 * s2
    c4, s4 = c2 * c2 - s2 * s2, 2 * c2 * s2
    basis = np.stack([c1, c2, c3, c4, s1, s2, s3, s4], axis=1).reshape(K, 8, S * S)
    shape = 1 + np.einsum("lk,lkp->lp", _fourier(p["harm_amp"], p["harm_phase"], first_k=2), basis)
    d = rho - p["shape_radius"][:, None, None].astype(np.float32) * shape.reshape(K, S, S)
    return np.where(p["used"][:, None, None], d, np.float32(np.inf)), basis


def _style_arrays(num_raters: int, strength: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    st = STYLES[:num_raters]
    offset = np.array([s.offset for s in st]) * strength
    blur = np.array([s.blur for s in st]) * strength
    gate = np.array([s.strong_only for s in st]) & (strength > 0)
    return offset, blur, gate


def annotate(d: np.ndarray, keep: np.ndarray, offset_px: np.ndarray, blur_px: np.ndarray,
             jit: np.ndarray | None = None) -> np.ndarray:
    """Masks [V,R,H,W] bool: variant v, rater r marks the union of the shapes k with
    ``keep[v,r,k]``, each ``d + jit < offset_px[r]``, then (``blur_px[r] > 0``) Gaussian-blurred
    by ``blur_px[r]`` and kept where > 0.5. ``jit``: [R,K,H,W] or None."""
    base = d[None] if jit is None else d[None] + jit  # [1|R,K,H,W]
    inside = base < offset_px[:, None, None, None].astype(np.float32)  # [R,K,H,W]
    masks = (inside[None] & keep[..., None, None]).any(2)  # [V,R,H,W]
    for sigma in np.unique(blur_px[blur_px > 0]):  # one filter per distinct blur (one style here)
        sel = blur_px == sigma
        blurred = gaussian_filter(masks[:, sel].astype(np.float64), (0, 0, sigma, sigma), mode="constant")
        masks[:, sel] = blurred > 0.5
    return masks


def components(p: dict[str, np.ndarray], d: np.ndarray, basis: np.ndarray, num_raters: int,
               knobs: Knobs) -> Components:
    """The case's drawn masks and reference masks (module docstring)."""
    S = d.shape[-1]
    R = num_raters
    offset, blur, gate = _style_arrays(R, knobs.style)
    allowed = p["used"][None] & ~(gate[:, None] & (p["rel_contrast"][None] < STRONG_MIN))  # [R,K]
    is_lobe = np.arange(K) == LOBE
    core = allowed & ~is_lobe[None]
    drawn = allowed & (~is_lobe[None] | p["include"][:R, None])
    exact = annotate(d, np.stack([core, allowed, drawn]), offset * S, blur * S)
    if knobs.jitter > 0:
        coef = _fourier(knobs.jitter * S * p["jit_amp"][:R], p["jit_phase"][:R], first_k=1)  # [R,K,8]
        jit = np.einsum("rlk,lkp->rlp", coef, basis).reshape(R, K, S, S)
        masks = annotate(d, drawn[None], offset * S, blur * S, jit)[0]
    else:
        masks = exact[2]
    lobe_likely = knobs.include_p > 0.5
    truth = (d[: LOBE + int(lobe_likely)] < 0).any(0)
    return Components(masks, exact[0], exact[1], exact[1] if lobe_likely else exact[0], truth,
                      p["has_lobe"])


def render(p: dict[str, np.ndarray], d: np.ndarray) -> np.ndarray:
    """The image [H,W] float32 (module docstring)."""
    S = d.shape[-1]
    low = gaussian_filter(p["tex_low"], S / 12, mode="wrap")
    mid = gaussian_filter(p["tex_mid"], max(S / 64, 0.5), mode="wrap")
    low *= 0.04 / max(low.std(), 1e-8)
    mid *= 0.02 / max(mid.std(), 1e-8)
    shapes = ((d < 0) * p["contrast"][:, None, None]).max(0)
    shapes = gaussian_filter(shapes, max(S / 96, 0.5), mode="constant")
    return (0.3 + low + mid + 0.6 * shapes + 0.02 * p["noise"]).astype(np.float32)
