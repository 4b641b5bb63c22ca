"""Probabilistic U-Net (Kohl et al., NeurIPS 2018)."""
