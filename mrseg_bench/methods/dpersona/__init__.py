"""D-Persona (Wu et al., CVPR 2024): diversified and personalised multi-rater segmentation."""
