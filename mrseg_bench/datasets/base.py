"""Base class of every dataset: a pool of cases, split later by patient (``group_id``)."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.utils.data

from ..types import DatasetInfo, MultiRaterSample


@dataclass(frozen=True)
class Split:
    """Indices into a dataset. ``leaks_patients`` is True only for the reference protocol."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    protocol: str = "default"
    leaks_patients: bool = False


class MultiRaterDataset(torch.utils.data.Dataset, abc.ABC):
    """All cases of one dataset. ``__getitem__`` returns a validated ``MultiRaterSample``.

    ``case_ids`` and ``group_ids`` are cheap (no image loading) so splits can be made first.
    ``predefined_split()`` returns the dataset's published split, or None.
    """

    info: DatasetInfo
    _case_ids: list[str]
    _group_ids: list[str]
    _source_files: list[Path] | None = None

    @property
    def case_ids(self) -> list[str]:
        """Case ids in index order (subclasses fill ``_case_ids`` or override)."""
        return self._case_ids

    @property
    def group_ids(self) -> list[str]:
        """Patient ids in index order (subclasses fill ``_group_ids`` or override)."""
        return self._group_ids

    def __len__(self) -> int:
        return len(self.case_ids)

    @abc.abstractmethod
    def __getitem__(self, index: int) -> MultiRaterSample: ...

    def predefined_split(self) -> Split | None:
        return None

    def files(self) -> list[Path]:
        """Every file this dataset's content is read from (the run's data fingerprint hashes
        their names, sizes and contents; ``mrseg_bench.identity``). Loaders set
        ``_source_files`` or override this; a dataset that reads nothing returns []."""
        return list(self._source_files or [])

    def fingerprint_params(self) -> dict[str, Any] | None:
        """For a generated dataset (no files): the parameters that fully determine its content.
        None: not a generated dataset."""
        return None

