"""Batched flip + rotation augmentation, identical for image and masks (D-Persona's LIDC recipe).

Per sample ``b`` three uniforms are drawn from ``generator`` (always, so the stream does not depend
on the flags): horizontal flip if ``u0 < 0.5``, vertical flip if ``u1 < 0.5``, rotation angle
``(2 u2 - 1) * max_degrees``. One affine grid per sample maps each output pixel to its input
location ``R(angle) @ F(flips)`` (in pixel units, so non-square images are not sheared); the
image is resampled with ``image_mode`` (bilinear by default) and the masks with nearest, both with
zero padding outside the field of view. No Python loop over samples.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..types import MultiRaterBatch


def augmentation_params(batch_size: int, generator: torch.Generator, flip: bool = True,
                        rotate: bool = True, max_degrees: float = 180.0) -> tuple[torch.Tensor, ...]:
    """(hflip [B] bool, vflip [B] bool, angle [B] radians) drawn from ``generator``."""
    u = torch.rand(batch_size, 3, generator=generator, device=generator.device, dtype=torch.float64)
    hflip = (u[:, 0] < 0.5) & flip
    vflip = (u[:, 1] < 0.5) & flip
    angle = (2 * u[:, 2] - 1) * math.radians(max_degrees) * rotate
    return hflip, vflip, angle


def affine_theta(hflip: torch.Tensor, vflip: torch.Tensor, angle: torch.Tensor,
                 height: int, width: int) -> torch.Tensor:
    """``[B,2,3]`` theta for ``affine_grid``: output -> input = A^-1 R A F, A = diag(W, H)."""
    c, s = torch.cos(angle), torch.sin(angle)
    sx = 1 - 2 * hflip.to(angle.dtype)
    sy = 1 - 2 * vflip.to(angle.dtype)
    theta = torch.zeros(angle.shape[0], 2, 3, dtype=angle.dtype, device=angle.device)
    theta[:, 0, 0] = c * sx
    theta[:, 0, 1] = -s * sy * (height / width)
    theta[:, 1, 0] = s * sx * (width / height)
    theta[:, 1, 1] = c * sy
    return theta


def apply_affine(batch: MultiRaterBatch, hflip: torch.Tensor, vflip: torch.Tensor,
                 angle: torch.Tensor, image_mode: str = "bilinear") -> MultiRaterBatch:
    """Resample image (``image_mode``) and masks (nearest) of every sample with its own flips and
    rotation angle (radians, [B] tensors); returns a new batch."""
    image, masks = batch.image, batch.masks
    b, _, h, w = image.shape
    theta = affine_theta(hflip, vflip, angle, h, w).to(device=image.device, dtype=torch.float32)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    new_image = F.grid_sample(image.float(), grid, mode=image_mode, padding_mode="zeros",
                              align_corners=False).to(image.dtype)
    new_masks = F.grid_sample(masks.float(), grid, mode="nearest", padding_mode="zeros",
                              align_corners=False).to(masks.dtype)
    return MultiRaterBatch(new_image, new_masks, batch.rater_valid.clone(), list(batch.case_id),
                           list(batch.group_id))


def augment_batch(batch: MultiRaterBatch, generator: torch.Generator, flip: bool = True,
                  rotate: bool = True, max_degrees: float = 180.0,
                  image_mode: str = "bilinear") -> MultiRaterBatch:
    """Return a new batch with random flips (p=0.5 each axis) and rotations in
    ``[-max_degrees, max_degrees]``; masks stay binary uint8, ``rater_valid`` and ids unchanged."""
    if max_degrees < 0:
        raise ValueError(f"augment_batch: max_degrees must be >= 0, got {max_degrees}")
    hflip, vflip, angle = augmentation_params(len(batch), generator, flip, rotate, max_degrees)
    return apply_affine(batch, hflip, vflip, angle, image_mode)
