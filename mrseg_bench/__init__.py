"""mrseg-bench: head-to-head benchmark of multi-rater medical image segmentation methods."""

__version__ = "0.1.0"
