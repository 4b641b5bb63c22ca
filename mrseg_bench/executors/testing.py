"""A toy worker for testing executors without training anything (like ``torch.testing``).

``echo_worker({"name": "a"}, out)`` writes ``<out>/a.json`` holding its pid, its start and end
times (``time.time()``) and the ``CUDA_VISIBLE_DEVICES`` it was given, and returns
``{"status": "done", "run_dir": <that file>}``; ``{"fail": true}`` raises RuntimeError;
``{"sleep": s}`` sleeps first.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def echo_worker(spec: dict[str, Any], out: str, force: bool = False) -> dict[str, Any]:
    started = time.time()
    time.sleep(float(spec.get("sleep", 0)))
    if spec.get("fail"):
        raise RuntimeError(f"boom in {spec.get('name')}")
    path = Path(out) / f"{spec['name']}.json"
    path.write_text(json.dumps({"pid": os.getpid(), "spec": spec, "started": started, "finished": time.time(),
                                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}),
                    encoding="utf-8")
    return {"status": "done", "run_dir": str(path)}
