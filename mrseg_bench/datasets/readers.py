"""Decoding image and mask files of any supported format into numpy arrays.

Formats: png, jpg/jpeg, tif/tiff, bmp (Pillow), npy (numpy, no pickles), nii/nii.gz (nibabel).
``split_name`` gives (case id, extension) with ``.nii.gz`` one suffix.

- ``decode_image``: Pillow files -> ``(H,W,C)`` (palette -> RGB, alpha dropped, 16-bit kept);
  a multi-frame TIFF -> ``(H,W,Z,C)``. npy / NIfTI -> the stored array with trailing
  singleton axes dropped (the caller decides channels vs slices).
- ``decode_mask``: Pillow files -> a 2-D label map ``(H,W)``: grey values as they are, palette
  PNGs as palette indices, RGB(A) as ``0xRRGGBB`` integers (black = background); a multi-frame
  TIFF -> ``(H,W,Z)``. npy / NIfTI as for images.
Every failure is a ValueError naming the file.

Size cap: a NIfTI file's voxel count is read from its header and checked against
``max_voxels()`` (default 2**28 = 268M voxels, a 512x512x1024 volume; environment variable
``MRSEG_MAX_VOXELS``) *before* its data is read, so a small ``.nii.gz`` of a huge volume is
refused without decompressing it (Pillow files have Pillow's own pixel limit; a ``.npy`` holds
its data uncompressed, so its size is the file's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .limits import env_limit

PIL_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
ARRAY_EXTS = (".npy", ".nii", ".nii.gz")
EXTS = PIL_EXTS + ARRAY_EXTS
MAX_VOXELS_ENV = "MRSEG_MAX_VOXELS"
DEFAULT_MAX_VOXELS = 2**28


def max_voxels() -> int:
    """The voxel cap for one NIfTI file: ``$MRSEG_MAX_VOXELS`` or ``DEFAULT_MAX_VOXELS``."""
    value = env_limit(MAX_VOXELS_ENV, 1, "voxels")
    return DEFAULT_MAX_VOXELS if value is None else value


def load_nifti(path: Path):
    """``nibabel.load(path)`` with its header's voxel count checked against ``max_voxels()``
    before any data is read. ValueError naming the file."""
    import math

    import nibabel as nib

    try:
        img = nib.load(str(path))
        shape = tuple(int(d) for d in img.shape)
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types for a corrupt file
        raise ValueError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    cap = max_voxels()
    if math.prod(shape) > cap:
        raise ValueError(f"{path}: NIfTI header declares shape {shape} ({math.prod(shape):,} voxels), more than "
                         f"the {cap:,}-voxel cap; crop the volume, or raise the cap with {MAX_VOXELS_ENV}=N "
                         "if it is genuine; nothing was read")
    return img


def split_name(name: str) -> tuple[str, str]:
    """``"a.nii.gz"`` -> ``("a", ".nii.gz")``; ``"b.PNG"`` -> ``("b", ".png")``."""
    lower = name.lower()
    if lower.endswith(".nii.gz"):
        return name[:-7], ".nii.gz"
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    return name[:dot], lower[dot:]


def pack_rgb(arr: np.ndarray) -> np.ndarray:
    """``(...,3|4)`` uint8 colours -> ``(...)`` int64 ``0xRRGGBB`` (alpha ignored)."""
    a = arr[..., :3].astype(np.int64)
    return (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]


def _squeeze_trailing(arr: np.ndarray) -> np.ndarray:
    while arr.ndim > 2 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr


def _pil_frames(path: Path, as_mask: bool) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            frames = []
            for k in range(getattr(im, "n_frames", 1)):
                im.seek(k)
                frames.append(_pil_array(im, as_mask))
    except ValueError:
        raise
    except Exception as exc:  # Pillow raises several types for a bad file
        raise ValueError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    if len(frames) == 1:
        return frames[0]
    if any(f.shape != frames[0].shape for f in frames):
        raise ValueError(f"{path}: the frames of this multi-page file differ in size")
    return np.stack(frames, axis=2)  # (H,W,Z[,C])


def _pil_array(im, as_mask: bool) -> np.ndarray:
    mode = im.mode
    if as_mask:
        if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
            return pack_rgb(np.asarray(im.convert("RGB")))
        if mode == "LA":
            return np.asarray(im)[..., 0]
        return np.asarray(im)  # L, P (palette indices), 1, I, I;16, F
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode == "LA":
        im = im.convert("L")
    elif mode == "1":
        im = im.convert("L")
    arr = np.asarray(im)
    return arr[..., None] if arr.ndim == 2 else arr


def _npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - a bad or pickled .npy
        raise ValueError(f"{path}: not a readable .npy array ({type(exc).__name__}: {exc})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise ValueError(f"{path}: expected a numeric array, got {getattr(arr, 'dtype', type(arr))}")
    return _squeeze_trailing(arr)


def _nifti(path: Path) -> np.ndarray:
    img = load_nifti(path)
    try:
        arr = np.asarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types for a corrupt file
        raise ValueError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    return _squeeze_trailing(arr)


def decode(path: Path, as_mask: bool) -> np.ndarray:
    """Decode ``path`` as an image or a mask (module docstring). ValueError naming the file."""
    ext = split_name(path.name)[1]
    if ext in PIL_EXTS:
        arr = _pil_frames(path, as_mask)
    elif ext == ".npy":
        arr = _npy(path)
    elif ext in (".nii", ".nii.gz"):
        arr = _nifti(path)
    else:
        raise ValueError(f"{path}: unsupported extension {ext!r}; use one of {', '.join(EXTS)}")
    if arr.ndim < 2 or min(arr.shape) == 0:
        raise ValueError(f"{path}: expected a 2-D or 3-D array, got shape {arr.shape}")
    return arr


def decode_image(path: Path) -> np.ndarray:
    return decode(path, as_mask=False)


def decode_mask(path: Path) -> np.ndarray:
    return decode(path, as_mask=True)
