"""The GPU check's JSON file (``gpu_check.json``), version 1, and its validator.

``validate(doc) -> list[str]``: every problem found, as "path: what is wrong" (empty: valid).
The fields are documented in docs/gpu-check.md; this module is their checked form. Numbers that
could not be measured are ``null``; every step is listed with its status, so a partial file
says what is missing and why.
"""

from __future__ import annotations

from typing import Any

SCHEMA = "mrseg-bench-gpu-check"
VERSION = 1
MODES = ("cuda", "dry-run")
STATUSES = ("ok", "partial", "failed")
STEP_STATUSES = ("ok", "failed", "timeout", "skipped")
NUM = (int, float)

TOP = {"schema": str, "version": int, "mode": str, "status": str, "started_at": str, "finished_at": str,
       "wall_s": NUM, "budget_s": NUM, "environment": (dict, type(None)), "steps": list,
       "tests": (dict, type(None)), "quickstart": list, "profiles": list, "ratios": (dict, type(None))}
ENVIRONMENT = {"python": str, "torch": str, "cuda_available": bool, "device": str, "cpu_count": (int, type(None)),
               "gpu_name": (str, type(None)), "torch_cuda": (str, type(None)),
               "gpu_memory_gib": (*NUM, type(None)), "mrseg_bench": str}
STEP = {"name": str, "status": str, "wall_s": NUM, "timeout_s": NUM, "error": (str, type(None))}
TESTS = {"exit_code": (int, type(None)), "passed": int, "failed": int, "skipped": int, "errors": int,
         "cases": list}
CASE = {"name": str, "outcome": str, "message": (str, type(None))}
QUICKSTART = {"label": str, "precision": str, "compile": bool, "channels_last": bool,
              "exit_code": (int, type(None)), "wall_s": (*NUM, type(None)), "runs": list}
QS_RUN = {"method": (str, type(None)), "status": (str, type(None)), "wall_s": (*NUM, type(None)),
          "train_images_per_s_run": (*NUM, type(None)), "peak_memory_train_mb": (*NUM, type(None)),
          "peak_memory_predict_mb": (*NUM, type(None))}
OPT_NUM = (*NUM, type(None))
PROFILE = {"method": str, "precision": str, "preset": str, "n_samples": int, "error": (str, type(None)),
           "params": OPT_NUM, "flops_per_image": OPT_NUM, "train_images_per_s": OPT_NUM,
           "infer_images_per_s": OPT_NUM, "latency_p50_ms": OPT_NUM, "latency_p95_ms": OPT_NUM,
           "peak_memory_train_mb": OPT_NUM, "peak_memory_predict_mb": OPT_NUM}
RATIOS = {"device": str, "rounds": int, "timing": str, "values": dict, "errors": dict}


def _check(obj: Any, fields: dict[str, Any], where: str, errors: list[str], required: bool = True) -> bool:
    if not isinstance(obj, dict):
        errors.append(f"{where}: expected an object, got {type(obj).__name__}")
        return False
    for key, types in fields.items():
        if key not in obj:
            if required:
                errors.append(f"{where}.{key}: missing")
            continue
        value = obj[key]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            errors.append(f"{where}.{key}: expected {types}, got a boolean")
        elif not isinstance(value, types):
            errors.append(f"{where}.{key}: expected {types}, got {type(value).__name__}")
    return True


def _records(items: Any, fields: dict[str, Any], where: str, errors: list[str]) -> None:
    for i, item in enumerate(items if isinstance(items, list) else []):
        _check(item, fields, f"{where}[{i}]", errors)


def validate(doc: Any) -> list[str]:
    """Problems with ``doc`` as a version-1 GPU-check file (see the module doc)."""
    errors: list[str] = []
    if not _check(doc, TOP, "$", errors):
        return errors
    if doc.get("schema") != SCHEMA or doc.get("version") != VERSION:
        errors.append(f"$: expected schema {SCHEMA!r} version {VERSION}")
    if doc.get("mode") not in MODES:
        errors.append(f"$.mode: {doc.get('mode')!r} is not one of {MODES}")
    if doc.get("status") not in STATUSES:
        errors.append(f"$.status: {doc.get('status')!r} is not one of {STATUSES}")
    if isinstance(doc.get("environment"), dict):
        _check(doc["environment"], ENVIRONMENT, "$.environment", errors)
    _records(doc.get("steps"), STEP, "$.steps", errors)
    for i, step in enumerate(doc.get("steps") or []):
        if isinstance(step, dict) and step.get("status") not in STEP_STATUSES:
            errors.append(f"$.steps[{i}].status: {step.get('status')!r} is not one of {STEP_STATUSES}")
    if isinstance(doc.get("tests"), dict):
        _check(doc["tests"], TESTS, "$.tests", errors)
        _records(doc["tests"].get("cases"), CASE, "$.tests.cases", errors)
    _records(doc.get("quickstart"), QUICKSTART, "$.quickstart", errors)
    for i, qs in enumerate(doc.get("quickstart") or []):
        if isinstance(qs, dict):
            _records(qs.get("runs"), QS_RUN, f"$.quickstart[{i}].runs", errors)
    _records(doc.get("profiles"), PROFILE, "$.profiles", errors)
    if isinstance(doc.get("ratios"), dict):
        _check(doc["ratios"], RATIOS, "$.ratios", errors)
        for name, value in (doc["ratios"].get("values") or {}).items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, NUM)):
                errors.append(f"$.ratios.values.{name}: expected a number or null")
    return errors
