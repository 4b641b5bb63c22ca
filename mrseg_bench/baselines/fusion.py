"""Label-fusion baselines: one U-Net (classes=1) trained on a fused label per image.

- ``fusion.majority``: ``mean over valid raters >= 0.5`` -> {0,1}. Ties (an even number of
  raters split half/half) count as FOREGROUND.
- ``fusion.staple``: SimpleITK's ``STAPLEImageFilter`` (Warfield et al. 2004; EM over per-rater
  sensitivity/specificity) on the case's stack of valid rater masks, foreground value 1; its
  per-pixel foreground probability is thresholded at ``staple_threshold`` (default 0.5,
  ``prob >= threshold - 1e-6`` -> 1: STAPLE's exact ties come out as 0.49999999999999994, and
  ties count as foreground, as in the majority vote). EM stops at ITK's convergence test or after
  ``staple_max_iterations`` (default 100; ITK's own default is unlimited and never stops on
  noisy, structureless masks). Unanimous raters (including a single valid rater, or all empty)
  give their common mask without running STAPLE (STAPLE returns NaN on all-empty stacks); if
  STAPLE still returns NaN, the majority vote is used for that case. Results are cached per case,
  keyed by a hash of the case's valid rater masks (so augmented copies never reuse a stale
  result), in an LRU cache of ``staple_cache_size`` entries.
- ``fusion.soft``: the mean of the valid raters, a soft target in [0,1].

Loss: generalised Dice (default) or BCE (``loss``). Capability CONSENSUS only; with
``as_sample=True`` the consensus is ALSO returned as one DIVERSE sample ``[B,1,H,W]`` and the
method's capabilities then include DIVERSE (off by default: it is not a diverse model).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..method import MethodInfo
from ..registry import register_method
from ..tune.space import Range, log_uniform
from ..types import Capability, MultiRaterBatch
from .common import check_batch, valid_rater_mean
from .deterministic import SingleOutputUNet, UNetConfig

TIE_TOLERANCE = 1e-6


@dataclass
class FusionConfig(UNetConfig):
    """``as_sample``: also output the consensus as one DIVERSE sample (flagged in capabilities).
    ``staple_threshold``: STAPLE probability >= threshold -> foreground (fusion.staple only)."""

    SEARCH_SPACE: ClassVar[dict[str, Range]] = {  # mrseg_bench.tune.space; docs/tuning.md
        "lr": log_uniform(1e-5, 1e-3, "reference: D-Persona's comparison trains the baselines with Adam 1e-4 (docs/methods.md); a decade either side (our reasoning)"),
    }

    as_sample: bool = False
    staple_threshold: float = 0.5
    staple_max_iterations: int = 100
    staple_cache_size: int = 4096


def majority_vote(masks: torch.Tensor, rater_valid: torch.Tensor) -> torch.Tensor:
    """``[B,R,H,W], [B,R] -> [B,H,W]`` float {0,1}: valid-rater mean >= 0.5 (ties -> 1)."""
    return (valid_rater_mean(masks, rater_valid) >= 0.5).float()


def staple_probability(masks: np.ndarray, max_iterations: int = 100) -> np.ndarray:
    """SimpleITK STAPLE foreground probability ``[H,W]`` float64 for one case's ``[R,H,W]``
    binary rater stack (R >= 1). Unanimous stacks return their common mask; NaN where STAPLE
    fails (caller decides)."""
    import SimpleITK as sitk

    masks = np.ascontiguousarray(masks, dtype=np.uint8)
    if masks.ndim != 3 or masks.shape[0] < 1:
        raise ValueError(f"staple_probability: need a [R,H,W] stack with R >= 1, got {masks.shape}")
    if (masks == masks[:1]).all():
        return masks[0].astype(np.float64)
    filt = sitk.STAPLEImageFilter()
    filt.SetForegroundValue(1)
    filt.SetMaximumIterations(int(max_iterations))
    out = filt.Execute([sitk.GetImageFromArray(m) for m in masks])
    return sitk.GetArrayFromImage(out).astype(np.float64)


class StapleFuser:
    """STAPLE-fused binary labels per case, cached (LRU) by a hash of the valid rater masks."""

    def __init__(self, threshold: float = 0.5, cache_size: int = 4096, max_iterations: int = 100) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"staple_threshold must be in (0, 1], got {threshold}")
        if max_iterations < 1:
            raise ValueError(f"staple_max_iterations must be >= 1, got {max_iterations}")
        if cache_size < 0:
            raise ValueError(f"staple_cache_size must be >= 0, got {cache_size}")
        self.threshold = threshold
        self.cache_size = cache_size
        self.max_iterations = max_iterations
        self._cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.computed = 0  # number of STAPLE fusions actually run (cache misses)

    def _fuse_one(self, stack: np.ndarray) -> torch.Tensor:
        prob = staple_probability(stack, self.max_iterations)
        if np.isnan(prob).any():
            prob = stack.astype(np.float64).mean(0)  # majority-vote fallback (documented above)
            return torch.from_numpy(prob >= 0.5).to(torch.uint8)
        return torch.from_numpy(prob >= self.threshold - TIE_TOLERANCE).to(torch.uint8)

    def __call__(self, masks: torch.Tensor, rater_valid: torch.Tensor) -> torch.Tensor:
        """``[B,R,H,W], [B,R] -> [B,H,W]`` float {0,1}. One STAPLE per uncached case (SimpleITK
        works per image, so this loops over the cases of the batch; cached cases cost a hash)."""
        check_batch(masks, rater_valid, "fusion.staple")
        m = masks.detach().to("cpu", torch.uint8).numpy()
        v = rater_valid.detach().cpu().numpy()
        out = []
        for b in range(m.shape[0]):
            stack = m[b][v[b]]
            key = hashlib.blake2b(stack.tobytes() + repr(stack.shape).encode(), digest_size=16).digest()
            hit = self._cache.get(key)
            if hit is None:
                hit = self._fuse_one(stack)
                self.computed += 1
                if self.cache_size:
                    self._cache[key] = hit
                    if len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
            out.append(hit)
        return torch.stack(out).to(masks.device, torch.float32)


class _Fusion(SingleOutputUNet):
    cfg: FusionConfig

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__(cfg)
        if cfg.as_sample:  # instance-level info: the consensus is also offered as 1 sample
            self.info = dataclasses.replace(
                type(self).info, capabilities=type(self).info.capabilities | {Capability.DIVERSE})


class MajorityFusion(_Fusion):
    info = MethodInfo("fusion.majority", "U-Net on majority-vote labels (label fusion baseline)",
                      frozenset({Capability.CONSENSUS}), FusionConfig,
                      "target = valid-rater mean >= 0.5 (ties -> foreground)")

    def target(self, batch: MultiRaterBatch) -> torch.Tensor:
        return majority_vote(batch.masks, batch.rater_valid)[:, None]


class StapleFusion(_Fusion):
    info = MethodInfo("fusion.staple", "Warfield et al., STAPLE, IEEE TMI 2004 (SimpleITK) + U-Net",
                      frozenset({Capability.CONSENSUS}), FusionConfig,
                      "target = SimpleITK STAPLE probability >= staple_threshold, cached per case")

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__(cfg)
        self.fuser = StapleFuser(cfg.staple_threshold, cfg.staple_cache_size, cfg.staple_max_iterations)

    def target(self, batch: MultiRaterBatch) -> torch.Tensor:
        return self.fuser(batch.masks, batch.rater_valid)[:, None]


class SoftFusion(_Fusion):
    info = MethodInfo("fusion.soft", "U-Net on the mean of the raters (soft labels)",
                      frozenset({Capability.CONSENSUS}), FusionConfig,
                      "target = valid-rater mean in [0,1]")

    def target(self, batch: MultiRaterBatch) -> torch.Tensor:
        return valid_rater_mean(batch.masks, batch.rater_valid)[:, None]


@register_method("fusion.majority")
def fusion_majority(cfg: FusionConfig | None = None) -> MajorityFusion:
    """U-Net on majority-vote fused labels."""
    return MajorityFusion(cfg or FusionConfig())


@register_method("fusion.staple")
def fusion_staple(cfg: FusionConfig | None = None) -> StapleFusion:
    """U-Net on SimpleITK-STAPLE fused labels."""
    return StapleFusion(cfg or FusionConfig())


@register_method("fusion.soft")
def fusion_soft(cfg: FusionConfig | None = None) -> SoftFusion:
    """U-Net on soft (rater-mean) labels."""
    return SoftFusion(cfg or FusionConfig())
