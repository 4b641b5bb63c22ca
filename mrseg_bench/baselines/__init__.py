"""Baselines. Importing this package registers ``unet``, ``probunet``, ``fusion.majority``,
``fusion.staple``, ``fusion.soft``, ``per_rater.separate``, ``per_rater.multihead``, ``cm.global``, ``cm.pixel``,
``pionono``, ``phiseg``, ``mose``, ``tab``, ``ssn``, ``flow_ssn`` and ``ccdm``."""

from . import (  # noqa: F401 - registers methods
    ccdm,
    cm,
    deterministic,
    flow_ssn,
    fusion,
    mose,
    per_rater,
    phiseg,
    pionono,
    probunet,
    ssn,
    tab,
)
from .unet import DEFAULT_DECODER_CHANNELS, KohlUNet, build_backbone, build_unet

__all__ = ["DEFAULT_DECODER_CHANNELS", "KohlUNet", "build_backbone", "build_unet"]
