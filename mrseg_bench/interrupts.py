"""SIGINT/SIGTERM during a run: finish the current training step, write ``last``, stop cleanly.

``catch_signals()`` installs handlers (main thread only; elsewhere it is a no-op) that record the
first signal; training polls ``StopFlag()`` after every step and writes its ``last`` checkpoint
before stopping. A second signal stops at once (``KeyboardInterrupt``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """Holds the first signal received (``signum``); calling it gives "interrupt" once set."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> str | None:
        return "interrupt" if self.signum is not None else None

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)


@contextlib.contextmanager
def catch_signals(flag: StopFlag | None = None) -> Iterator[StopFlag]:
    """Record SIGINT/SIGTERM in ``flag`` (a new one if None) while the block runs."""
    flag = flag or StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, flag._handle)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class RunInterrupted(BaseException):  # noqa: N818 - an interruption, not an error of the run
    """A run stopped by a signal. ``checkpoint``: its ``last`` file to resume from (None: none yet)."""

    def __init__(self, label: str, run_dir: Path, checkpoint: Path | None, exit_code: int) -> None:
        super().__init__(label)
        self.label, self.run_dir, self.checkpoint, self.exit_code = label, run_dir, checkpoint, exit_code

    def __reduce__(self):  # picklable, so a worker process can hand it back
        return (type(self), (self.label, self.run_dir, self.checkpoint, self.exit_code))

    def message(self, command: str = "the same command") -> str:
        where = f"its last checkpoint is {self.checkpoint}" if self.checkpoint else \
            f"it has no checkpoint yet (run folder {self.run_dir})"
        return f"interrupted: {self.label}; {where}; run {command} to resume it"
