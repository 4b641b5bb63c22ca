"""Size limits a user may set through the environment (``MRSEG_MAX_VOXELS``, the pickle
allocation budget): one parser, so every limit reads and refuses a value the same way."""

from __future__ import annotations

import os


def env_limit(name: str, minimum: int, unit: str) -> int | None:
    """``$name`` as an int (``1e8`` accepted), or None when unset or blank; ValueError naming the
    variable when it is not a number of ``unit`` or below ``minimum``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(float(text))
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected a number of {unit}") from None
    if value < minimum:
        raise ValueError(f"{name}={text!r}: must be >= {minimum}")
    return value
