"""The report's view of ``qualitative.pt`` (the file contract is ``mrseg_bench.qualitative``)."""

from __future__ import annotations

from ..qualitative import QUALITATIVE_FILE, as_prediction, load_qualitative, save_qualitative

__all__ = ["QUALITATIVE_FILE", "as_prediction", "load_qualitative", "save_qualitative"]
