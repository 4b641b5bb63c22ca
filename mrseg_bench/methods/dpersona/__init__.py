"""D-Persona (Wu et al., CVPR 2024): diversified and personalised multi-rater segmentation."""

from .config import DPersonaConfig
from .method import DPersona, dpersona
from .model import DPersonaNet
from .reference import (
           export_reference_state_dict,
           load_reference_checkpoint,
           load_reference_state_dict,
)

__all__ = ["DPersona", "DPersonaConfig", "DPersonaNet", "dpersona", "export_reference_state_dict",
           "load_reference_checkpoint", "load_reference_state_dict"]
