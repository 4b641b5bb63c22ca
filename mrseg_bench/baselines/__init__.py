"""Baselines. Importing this package registers ``unet``, ``probunet``, ``fusion.majority``,
``fusion.staple``, ``fusion.soft``, ``per_rater.separate``, ``per_rater.multihead``, ``cm.global``, ``cm.pixel``,
``pionono``, ``phiseg``, ``mose`` and ``tab``."""

from . import cm, deterministic, fusion, mose, per_rater, phiseg, pionono, probunet, tab  # noqa: F401 - registers methods
from .unet import DEFAULT_DECODER_CHANNELS, KohlUNet, build_backbone, build_unet

__all__ = ["DEFAULT_DECODER_CHANNELS", "KohlUNet", "build_backbone", "build_unet"]
