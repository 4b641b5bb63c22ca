"""Baselines. Importing this package registers ``unet``, ``probunet``, ``fusion.majority``,
``fusion.staple``, ``fusion.soft``, ``per_rater.separate`` and ``per_rater.multihead``."""

from . import deterministic, fusion, per_rater, probunet  # noqa: F401 - registers methods
from .unet import DEFAULT_DECODER_CHANNELS, KohlUNet, build_backbone, build_unet

__all__ = ["DEFAULT_DECODER_CHANNELS", "KohlUNet", "build_backbone", "build_unet"]
