"""Batches for the engine: the datasets package's seeded ``make_loader`` and ``augment_batch``,
on-the-fly resizing and device transfer."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from ..types import MultiRaterBatch


def drops_trailing_one(n: int, batch_size: int) -> bool:
    """True when ``n`` cases in batches of ``batch_size`` leave a last batch of exactly one
    (and there is a full batch before it): BatchNorm cannot train on a batch of one."""
    return n > batch_size and n % batch_size == 1


def make_batches(dataset, indices: Sequence[int], batch_size: int, shuffle: bool, seed: int,
                 num_workers: int = 0, training: bool = False) -> Iterable[MultiRaterBatch]:
    """A loader over ``indices`` whose order is a pure function of ``seed``. ``training=True``
    drops a trailing batch of one case (``drops_trailing_one``; with shuffling a different case
    each epoch); evaluation always sees every case."""
    from ..datasets.loader import make_loader

    indices = list(indices)
    drop = training and drops_trailing_one(len(indices), batch_size)
    return make_loader(dataset, indices, batch_size=batch_size, shuffle=shuffle, seed=seed,
                       num_workers=num_workers, drop_last=drop)


def augment(batch: MultiRaterBatch, seed: int) -> MultiRaterBatch:
    """Random flips/rotations (``datasets.augment.augment_batch``) with a generator seeded by ``seed``."""
    from ..datasets.augment import augment_batch

    return augment_batch(batch, torch.Generator().manual_seed(seed))


def resize_batch(batch: MultiRaterBatch, size: int) -> MultiRaterBatch:
    """Resize to ``size x size`` (bilinear image, nearest masks); 0 or same size: unchanged."""
    if not size or tuple(batch.image.shape[-2:]) == (size, size):
        return batch
    image = F.interpolate(batch.image, size=(size, size), mode="bilinear", align_corners=False)
    masks = F.interpolate(batch.masks.float(), size=(size, size), mode="nearest").to(torch.uint8)
    return MultiRaterBatch(image, masks, batch.rater_valid, list(batch.case_id), list(batch.group_id))


def prepare(batch: MultiRaterBatch, device: torch.device, image_size: int = 0,
            channels_last: bool = False) -> MultiRaterBatch:
    """Resize, move to ``device`` and optionally make the image channels_last."""
    batch = resize_batch(batch, image_size).to(device, non_blocking=device.type == "cuda")
    if channels_last:
        batch.image = batch.image.contiguous(memory_format=torch.channels_last)
    return batch


def limit(indices: Sequence[int], max_cases: int) -> list[int]:
    """The first ``max_cases`` indices (0: all)."""
    return list(indices)[:max_cases] if max_cases else list(indices)
