"""Probabilistic U-Net (Kohl et al., NeurIPS 2018). Importing registers ``probunet``."""

from .method import ProbUNet, ProbUNetConfig, probunet
from .model import ProbUNetModel
from .modules import Fcomb, GaussianConvEncoder, l2_norm_sum

__all__ = ["Fcomb", "GaussianConvEncoder", "ProbUNet", "ProbUNetConfig", "ProbUNetModel",
           "l2_norm_sum", "probunet"]
