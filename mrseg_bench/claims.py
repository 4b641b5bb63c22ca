"""Atomic claims: one worker trains a run at a time, on one machine or many sharing a file system.

A run is claimed by creating its claim file with ``O_CREAT | O_EXCL`` (atomic on local file
systems and NFSv3+): the file holds the owner's host, pid, claim id and start time; its
modification time is the heartbeat, refreshed every ``heartbeat_s`` by a daemon thread.

A claim is **stale** when its heartbeat is older than ``stale_s``, or at once when its owner ran
on this machine (same host, boot and pid namespace) and its pid is gone. A stale claim is taken
over atomically: the taker renames the claim file to a name of its own (only one rename of a
file succeeds), checks that it moved the claim it judged stale, and creates a fresh claim with
``O_EXCL``; every other contender fails one of these steps and skips the run.

The heartbeat thread also checks that the claim is still its own; if another worker took it over
(this one was suspended past ``stale_s``), ``Claim.lost`` turns true and training stops without
writing.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def _read_first(path: str) -> str:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def machine_identity() -> dict[str, str]:
    """Host name, boot id and pid namespace: two processes with equal identities see each other's pids."""
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    return {"host": socket.gethostname(), "boot_id": _read_first("/proc/sys/kernel/random/boot_id"),
            "pid_ns": pid_ns}


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _read_first(f"/proc/{pid}/stat")
    return not (stat and stat.rsplit(")", 1)[-1].split()[:1] == ["Z"])


@dataclass(frozen=True)
class ClaimInfo:
    """What a claim file says, and how old its heartbeat is (seconds)."""

    owner: dict[str, Any]
    age_s: float

    def describe(self) -> str:
        o = self.owner
        if not o.get("host"):
            return f"claimed by an unknown owner (the claim file is unreadable; heartbeat {self.age_s:.0f} s ago)"
        return f"claimed by {o.get('host', '?')} pid {o.get('pid', '?')} since {o.get('started_at', '?')} " \
               f"(heartbeat {self.age_s:.0f} s ago)"


MAX_CLAIM_BYTES = 64 * 1024  # a claim file is ~200 bytes; more is not one of ours


def read_claim(path: Path) -> ClaimInfo | None:
    """The claim at ``path`` (None when there is none). A file that is not a claim (torn while
    being created, binary garbage, not JSON, too large) is an owner unknown (``owner == {}``).
    IsADirectoryError (an OSError) naming the path when a folder stands in its place."""
    try:
        age = time.time() - os.stat(path).st_mtime
        if Path(path).is_dir():
            raise IsADirectoryError(21, "a folder is where the run's claim file goes; remove it", str(path))
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CLAIM_BYTES + 1)
    except FileNotFoundError:
        return None
    try:
        if len(raw) > MAX_CLAIM_BYTES:
            raise ValueError("too large")
        owner = json.loads(raw.decode("utf-8"))
        owner = owner if isinstance(owner, dict) else {}
    except (ValueError, RecursionError):  # torn while being created, or foreign (UnicodeDecodeError too)
        owner = {}
    return ClaimInfo(owner, max(age, 0.0))


def is_stale(info: ClaimInfo, stale_s: float) -> bool:
    """Heartbeat older than ``stale_s``, or its owner ran on this machine and is gone."""
    if info.age_s > stale_s:
        return True
    o, me = info.owner, machine_identity()
    same_machine = bool(me["boot_id"]) and all(o.get(k) == v for k, v in me.items())
    return same_machine and isinstance(o.get("pid"), int) and not pid_alive(o["pid"])


class Claim:
    """A held claim. ``release()`` (or the context manager) stops the heartbeat and removes it."""

    def __init__(self, path: Path, claim_id: str, heartbeat_s: float) -> None:
        self.path, self.claim_id, self.heartbeat_s = Path(path), claim_id, heartbeat_s
        self.took_over: ClaimInfo | None = None  # the stale claim this one replaced
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim-heartbeat {self.path.name}", daemon=True)
        self._thread.start()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def owned(self) -> bool:
        info = read_claim(self.path)
        return info is not None and info.owner.get("claim_id") == self.claim_id

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self.owned():
                    time.sleep(0.05)  # a contender may be putting back a claim it moved by mistake
                    if not self.owned():
                        self._lost.set()
                        return
                os.utime(self.path)
            except OSError:  # a flaky file system: try again at the next beat
                continue

    def release(self) -> None:
        """Stop the heartbeat and remove the claim file if it is still ours."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        try:
            if self.owned():
                self.path.unlink()
        except OSError:
            pass

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _create(path: Path, heartbeat_s: float) -> Claim | None:
    """Create the claim file with O_EXCL; None when it exists."""
    claim_id = uuid.uuid4().hex
    owner = {**machine_identity(), "pid": os.getpid(), "claim_id": claim_id,
             "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
             "heartbeat_s": heartbeat_s}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(owner, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Claim(path, claim_id, heartbeat_s)


def _take_over(path: Path, judged: ClaimInfo, heartbeat_s: float) -> Claim | None:
    """Move the stale claim aside (one rename wins), check it is the one judged, claim afresh."""
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:12]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another worker moved it first
        return None
    moved = read_claim(aside)
    if moved is None or moved.owner != judged.owner:  # we moved a newer claim: put it back
        try:
            os.link(aside, path)  # fails if the path was claimed again meanwhile
        except OSError:
            pass
        aside.unlink(missing_ok=True)
        return None
    aside.unlink(missing_ok=True)
    claim = _create(path, heartbeat_s)
    if claim is not None:
        claim.took_over = judged
    return claim


def try_claim(path: str | Path, heartbeat_s: float = 60.0, stale_s: float = 600.0) -> tuple[Claim | None, ClaimInfo | None]:
    """Claim ``path``: ``(claim, replaced)`` on success (``replaced``: the stale claim taken over,
    or None), ``(None, holder)`` when another worker holds it."""
    path = Path(path)
    for _ in range(3):
        claim = _create(path, heartbeat_s)
        if claim is not None:
            return claim, None
        info = read_claim(path)
        if info is None:  # released between our two looks: try again
            continue
        if not is_stale(info, stale_s):
            return None, info
        claim = _take_over(path, info, heartbeat_s)
        if claim is not None:
            return claim, info
        info = read_claim(path)
        if info is not None and not is_stale(info, stale_s):
            return None, info
    return None, read_claim(path)
