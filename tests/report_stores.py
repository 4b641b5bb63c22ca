"""Build results stores for report tests from real metric rows (``MetricSuite.score`` on random
predictions), with the issue-11 run identity columns (``experiment``, ``overrides_json``) added
to the store when its schema does not have them yet."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import torch

from mrseg_bench.metrics import MetricSuite
from mrseg_bench.store import RUN_COLUMNS, ResultsStore
from mrseg_bench.types import Prediction

CAPS = {
    "dpersona": ("diverse,personalized", 10),
    "probunet": ("diverse", 10),
    "per_rater.separate": ("diverse,personalized", 3),
    "fusion.soft": ("diverse,consensus", 1),
}


def scored_rows(caps: str, n: int, seed: int, r: int = 3, b: int = 4, h: int = 12,
                suite: MetricSuite | None = None) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    raters = (torch.rand(b, r, h, h, generator=g) > 0.5).to(torch.uint8)
    base = raters.float().mean(1, keepdim=True)
    noise = lambda k: (base + 0.4 * torch.rand(b, k, h, h, generator=g) - 0.2).clamp(0, 1)  # noqa: E731
    pred = Prediction(samples=noise(n) if "diverse" in caps else None,
                      personalized=noise(r) if "personalized" in caps else None,
                      consensus=noise(1)[:, 0] if "consensus" in caps else None)
    suite = suite or MetricSuite()
    return suite.score(pred, raters, case_ids=[f"c{i}" for i in range(b)],
                       capabilities=[c for c in caps.split(",") if c])


def _ensure_identity_columns(path: Path) -> None:
    con = sqlite3.connect(path)
    have = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
    for col in ("experiment", "overrides_json"):
        if col not in have:
            con.execute(f"ALTER TABLE runs ADD COLUMN {col} TEXT")
    con.commit()
    con.close()


def write_run(path: Path, method: str, seed: int = 0, *, experiment: str | None = None,
              overrides: dict | None = None, protocol: str = "default", preset: str = "smoke",
              dataset: str = "synthetic", convention: str = "standard", run_cfg: dict | None = None,
              finished: str = "2026-01-01T01:00:00Z", rows: list[dict] | None = None,
              n: int | None = None, env: dict | None = None, run_dir: str | None = None) -> str:
    """Write one done run of ``method`` (capabilities and N from CAPS) and return its run_id;
    ``env``: added to its ``env_json`` (e.g. ``rater_names``, ``load_avg_1m``)."""
    caps, n_default = CAPS.get(method.split(" ")[0], ("diverse", 10))
    n = n or n_default
    overrides = overrides or {}
    run_id = f"{method}-{experiment or preset}-{json.dumps(overrides, sort_keys=True)}-{protocol}-" \
             f"{convention}-{json.dumps(run_cfg or {}, sort_keys=True)}-s{seed}"
    rows = rows if rows is not None else scored_rows(caps, n, seed)
    run = {
        "run_id": run_id, "method": method, "dataset": dataset, "seed": seed, "preset": preset,
        "protocol": protocol, "config_json": json.dumps({"method": method, "run": run_cfg or {}}),
        "config_hash": f"hash-{run_id}", "status": "done", "capabilities": caps,
        "convention": convention, "n_samples": n, "env_json": json.dumps({"device_name": "cpu", **(env or {})}),
        "run_dir": run_dir,
        "started_at": finished, "finished_at": finished, "wall_s": 1.0,
    }
    identity = {"experiment": experiment or preset, "overrides_json": json.dumps(overrides, sort_keys=True)}
    native = all(c in RUN_COLUMNS for c in identity)
    if native:
        run.update(identity)
    profile = [{"name": "params", "value": 1e6 * (1 + len(method)), "unit": ""},
               {"name": "infer_images_per_s", "value": 10.0 + seed, "unit": "img/s"}]
    with ResultsStore(path) as store:
        store.write_run(run, rows, profile)
    if not native:
        _ensure_identity_columns(path)
        con = sqlite3.connect(path)
        con.execute("UPDATE runs SET experiment=?, overrides_json=? WHERE run_id=?",
                    (identity["experiment"], identity["overrides_json"], run_id))
        con.commit()
        con.close()
    return run_id
