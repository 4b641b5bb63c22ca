"""Claims that are not claim files: binary garbage is an owner unknown, a folder fails clearly."""

from __future__ import annotations

import os
import time

import pytest

from mrseg_bench.claims import read_claim, try_claim


def _age(path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


# item 6
@pytest.mark.parametrize("payload", [os.urandom(300) + b"\xff\xfe", b"\x80" * 10, b"[" * 100_000, b"{}" * 40_000])
def test_garbage_claim_is_an_owner_unknown(tmp_path, payload) -> None:
    path = tmp_path / "run.claim"
    path.write_bytes(payload)
    info = read_claim(path)
    assert info is not None and info.owner == {}
    assert "unknown owner" in info.describe()
    claim, holder = try_claim(path, heartbeat_s=30, stale_s=60)  # fresh: held by someone unknown
    assert claim is None and holder.owner == {}
    _age(path, 120)  # stale: taken over
    claim, replaced = try_claim(path, heartbeat_s=30, stale_s=60)
    assert claim is not None and replaced.owner == {}
    claim.release()
    assert not path.exists()


# item 22
def test_claim_path_that_is_a_folder_names_it(tmp_path) -> None:
    path = tmp_path / "run.claim"
    path.mkdir()
    with pytest.raises(IsADirectoryError, match="a folder is where the run's claim file goes; remove it") as err:
        try_claim(path, heartbeat_s=30, stale_s=60)
    assert str(path) in str(err.value)
    assert path.is_dir()  # left alone


def test_cli_does_not_point_to_an_error_file_that_was_not_written(tmp_path) -> None:
    from mrseg_bench.cli import _error_file_hint

    assert _error_file_hint(tmp_path / "absent") == ""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "error.txt").write_text("x")
    assert _error_file_hint(tmp_path / "run") == f" (see {tmp_path / 'run' / 'error.txt'})"



def test_run_with_a_folder_at_the_claim_path_fails_that_run_clearly(tmp_path) -> None:
    import test_engine_toys as toys
    from typer.testing import CliRunner

    from mrseg_bench.cli import app
    from mrseg_bench.run.plan import plan_grid
    from mrseg_bench.run_folder import claim_path

    preset = tmp_path / "toy.toml"
    preset.write_text(toys.preset_toml(num_cases=16, epochs=1, n_samples=2))
    out = tmp_path / "runs"
    with toys.registered():
        spec = plan_grid("toy", "toyset", [0], str(preset)).specs[0]
        claim = claim_path(spec.run_dir(out))
        claim.mkdir(parents=True)
        res = CliRunner().invoke(app, ["run", "--methods", "toy", "--dataset", "toyset", "--preset", str(preset),
                                       "--out", str(out), "--quiet", "--no-report"])
    text = " ".join(res.output.split())
    assert res.exit_code == 1, res.output
    assert "a folder is where the run's claim file goes; remove it" in text and str(claim) in "".join(text.split())
    assert "error.txt" not in text and "Traceback" not in res.output
