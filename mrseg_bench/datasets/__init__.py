"""Datasets: the embedded synthetic set and loaders for LIDC, QUBIQ, NPC-170 and RIGA.

Importing this package registers every dataset (``mrseg_bench.registry.DATASETS``).
"""

from . import folder, lidc, npc, qubiq, riga, synthetic  # noqa: F401  (register the datasets)
from .augment import augment_batch
from .base import MultiRaterDataset, Split
from .loader import make_loader
from .safe_pickle import UnsafePickleError, safe_load
from .splits import make_split, split_from_json, split_to_json

__all__ = [
    "MultiRaterDataset",
    "Split",
    "UnsafePickleError",
    "augment_batch",
    "make_loader",
    "make_split",
    "safe_load",
    "split_from_json",
    "split_to_json",
]
