"""The data contract every dataset, method and metric agrees on (see DESIGN.md).

- A sample: ``image`` float32 ``[C,H,W]``; ``masks`` uint8 ``[R,H,W]`` in {0,1}, one per rater,
  rater order fixed within a dataset; ``rater_valid`` bool ``[R]``; ``case_id``; ``group_id``
  (the patient: splits never put one patient on both sides).
- A batch stacks samples: ``image [B,C,H,W]``, ``masks [B,R,H,W]``, ``rater_valid [B,R]``.
- A method returns a ``Prediction`` of probabilities (after sigmoid), any of ``samples
  [B,N,H,W]`` (diverse), ``personalized [B,R,H,W]`` (one per rater), ``consensus [B,H,W]``,
  and declares which through its capabilities.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch


class Capability(str, enum.Enum):
    """What a method's predictions contain."""

    DIVERSE = "diverse"  # Prediction.samples [B,N,H,W]
    PERSONALIZED = "personalized"  # Prediction.personalized [B,R,H,W]
    CONSENSUS = "consensus"  # Prediction.consensus [B,H,W]


RaterIdentity = Literal["fixed", "anonymous"]


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset. ``rater_identity="anonymous"`` means rater k is not the
    same person across cases (LIDC), so per-rater scores are not personalisation scores."""

    name: str
    in_channels: int
    num_raters: int
    rater_names: tuple[str, ...]
    image_size: tuple[int, int]
    rater_identity: RaterIdentity = "fixed"

    def __post_init__(self) -> None:
        if len(self.rater_names) != self.num_raters:
            raise ValueError(
                f"DatasetInfo({self.name!r}): {len(self.rater_names)} rater_names for "
                f"num_raters={self.num_raters}"
            )
        if self.rater_identity not in ("fixed", "anonymous"):
            raise ValueError(f"rater_identity must be 'fixed' or 'anonymous', got {self.rater_identity!r}")


@dataclass
class MultiRaterSample:
    """One case. Shapes: image [C,H,W] float32, masks [R,H,W] uint8, rater_valid [R] bool."""

    image: torch.Tensor
    masks: torch.Tensor
    rater_valid: torch.Tensor
    case_id: str
    group_id: str

    def validate(self, where: str = "sample") -> None:
        """Raise ValueError naming ``where`` if the sample breaks the contract."""
        if self.image.ndim != 3 or self.image.dtype != torch.float32:
            raise ValueError(f"{where}: image must be float32 [C,H,W], got {self.image.dtype} {tuple(self.image.shape)}")
        if self.masks.ndim != 3 or self.masks.dtype != torch.uint8:
            raise ValueError(f"{where}: masks must be uint8 [R,H,W], got {self.masks.dtype} {tuple(self.masks.shape)}")
        if self.masks.shape[1:] != self.image.shape[1:]:
            raise ValueError(f"{where}: masks {tuple(self.masks.shape)} and image {tuple(self.image.shape)} differ in H,W")
        if self.rater_valid.shape != (self.masks.shape[0],) or self.rater_valid.dtype != torch.bool:
            raise ValueError(f"{where}: rater_valid must be bool [{self.masks.shape[0]}], got {self.rater_valid.dtype} {tuple(self.rater_valid.shape)}")
        if bool((self.masks > 1).any()):
            raise ValueError(f"{where}: masks must be binary (0/1), max value {int(self.masks.max())}")


@dataclass
class MultiRaterBatch:
    """A stack of samples: image [B,C,H,W] float32, masks [B,R,H,W] uint8, rater_valid [B,R]."""

    image: torch.Tensor
    masks: torch.Tensor
    rater_valid: torch.Tensor
    case_id: list[str] = field(default_factory=list)
    group_id: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MultiRaterBatch:
        return MultiRaterBatch(
            self.image.to(device, non_blocking=non_blocking),
            self.masks.to(device, non_blocking=non_blocking),
            self.rater_valid.to(device, non_blocking=non_blocking),
            list(self.case_id),
            list(self.group_id),
        )

    def pin_memory(self) -> MultiRaterBatch:
        return MultiRaterBatch(self.image.pin_memory(), self.masks.pin_memory(),
                               self.rater_valid.pin_memory(), self.case_id, self.group_id)


def collate_samples(samples: Sequence[MultiRaterSample]) -> MultiRaterBatch:
    """DataLoader ``collate_fn``: stack samples into a MultiRaterBatch."""
    if not samples:
        raise ValueError("collate_samples: empty list of samples")
    return MultiRaterBatch(
        image=torch.stack([s.image for s in samples]),
        masks=torch.stack([s.masks for s in samples]),
        rater_valid=torch.stack([s.rater_valid for s in samples]),
        case_id=[s.case_id for s in samples],
        group_id=[s.group_id for s in samples],
    )


@dataclass
class Prediction:
    """Probabilities in [0,1]: samples [B,N,H,W], personalized [B,R,H,W], consensus [B,H,W]."""

    samples: torch.Tensor | None = None
    personalized: torch.Tensor | None = None
    consensus: torch.Tensor | None = None
    sample_weights: torch.Tensor | None = None

    def capabilities(self) -> frozenset[Capability]:
        """The capabilities this prediction actually carries."""
        have = set()
        if self.samples is not None:
            have.add(Capability.DIVERSE)
        if self.personalized is not None:
            have.add(Capability.PERSONALIZED)
        if self.consensus is not None:
            have.add(Capability.CONSENSUS)
        return frozenset(have)

    def to(self, device: torch.device | str) -> Prediction:
        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return Prediction(mv(self.samples), mv(self.personalized), mv(self.consensus), mv(self.sample_weights))
