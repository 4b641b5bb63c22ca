"""Claims: O_EXCL creation, heartbeat, staleness (age or a dead local pid), atomic takeover with
exactly one winner among racing takers, lost-claim detection, release."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

from mrseg_bench.claims import is_stale, machine_identity, pid_alive, read_claim, try_claim


def _age(path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def _foreign_claim(path, host="elsewhere", pid=1, claim_id="theirs") -> None:
    path.write_text(json.dumps({"host": host, "boot_id": "x", "pid_ns": "y", "pid": pid, "claim_id": claim_id,
                                "started_at": "2026-01-01T00:00:00Z"}))


def test_first_claim_wins_and_a_second_is_refused_until_release(tmp_path):
    path = tmp_path / "run.claim"
    a, replaced = try_claim(path, heartbeat_s=30, stale_s=60)
    assert a is not None and replaced is None
    owner = json.loads(path.read_text())
    assert owner["pid"] == os.getpid() and owner["host"] == machine_identity()["host"] and owner["started_at"]
    b, holder = try_claim(path, heartbeat_s=30, stale_s=60)
    assert b is None and holder.owner["claim_id"] == a.claim_id
    assert f"pid {os.getpid()}" in holder.describe()
    a.release()
    assert not path.exists()
    c, _ = try_claim(path, heartbeat_s=30, stale_s=60)
    assert c is not None
    c.release()


def test_heartbeat_refreshes_the_claim(tmp_path):
    path = tmp_path / "run.claim"
    claim, _ = try_claim(path, heartbeat_s=0.05, stale_s=1)
    _age(path, 100)
    time.sleep(0.4)
    assert read_claim(path).age_s < 1  # the heartbeat thread touched it again
    claim.release()


def test_fresh_foreign_claim_is_respected_and_a_stale_one_taken_over(tmp_path):
    path = tmp_path / "run.claim"
    _foreign_claim(path)
    assert try_claim(path, heartbeat_s=1, stale_s=60)[0] is None  # another host, heartbeat fresh
    _age(path, 61)
    claim, replaced = try_claim(path, heartbeat_s=1, stale_s=60)
    assert claim is not None and replaced.owner["claim_id"] == "theirs"
    assert json.loads(path.read_text())["claim_id"] == claim.claim_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.claim"]  # the moved-aside file is gone
    claim.release()


def test_a_dead_owner_on_this_machine_is_stale_at_once(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not pid_alive(dead.pid) and pid_alive(os.getpid())
    path = tmp_path / "run.claim"
    me = machine_identity()
    path.write_text(json.dumps({**me, "pid": dead.pid, "claim_id": "dead"}))
    info = read_claim(path)
    assert is_stale(info, stale_s=3600) == bool(me["boot_id"])
    path.write_text(json.dumps({**me, "pid": os.getpid(), "claim_id": "alive"}))
    assert not is_stale(read_claim(path), stale_s=3600)
    # same pid but another pid namespace (a container): not judged by pid, only by age
    path.write_text(json.dumps({**me, "pid_ns": "pid:[other]", "pid": dead.pid, "claim_id": "c"}))
    assert not is_stale(read_claim(path), stale_s=3600)


def _race(path, start, q):
    while time.time() < start:
        pass
    claim, _ = try_claim(path, heartbeat_s=30, stale_s=60)
    q.put(None if claim is None else claim.claim_id)
    time.sleep(3.0)  # hold it while the others try
    if claim is not None:
        claim.release()


def test_racing_takers_of_a_stale_claim_exactly_one_wins(tmp_path):
    ctx = mp.get_context("fork")
    for round_ in range(3):
        path = tmp_path / f"run{round_}.claim"
        _foreign_claim(path)
        _age(path, 120)
        q = ctx.Queue()
        start = time.time() + 0.5
        procs = [ctx.Process(target=_race, args=(path, start, q)) for _ in range(6)]
        for p in procs:
            p.start()
        won = [q.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(30)
        winners = [w for w in won if w is not None]
        assert len(winners) == 1, won
        assert not path.exists()  # the winner released it
        assert not [p for p in tmp_path.iterdir() if "stale" in p.name]


def test_a_claim_taken_over_is_lost_and_release_leaves_the_new_one(tmp_path):
    path = tmp_path / "run.claim"
    mine, _ = try_claim(path, heartbeat_s=0.05, stale_s=1)
    path.unlink()
    _foreign_claim(path, claim_id="newer")
    deadline = time.time() + 5
    while not mine.lost and time.time() < deadline:
        time.sleep(0.05)
    assert mine.lost
    mine.release()
    assert json.loads(path.read_text())["claim_id"] == "newer"


def test_an_unreadable_claim_is_judged_by_age_only(tmp_path):
    path = tmp_path / "run.claim"
    path.write_text("")  # a crash between O_EXCL create and write
    assert try_claim(path, heartbeat_s=1, stale_s=60)[0] is None
    _age(path, 100)
    claim, _ = try_claim(path, heartbeat_s=1, stale_s=60)
    assert claim is not None
    claim.release()
