"""Run one desweep step in a fresh process and measure its wall time and peak memory."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Measurement:
    """Wall time (s), peak resident memory (MiB), CPU time (s), the end of the log (stderr) and the output of one child process.

    On a shared machine the wall time grows with the other work; the CPU time
    (user + system) much less.
    """

    seconds: float
    peak_mib: float
    log: str = ""
    cpu_seconds: float = float("nan")
    stdout: str = ""


def run_step(args: list[str], *, env: dict[str, str] | None = None, capture_stdout: bool = False) -> Measurement:
    """``python -m desweep.cli <args>`` in a child process; raise with its stderr if it fails.

    With ``capture_stdout`` the command's output is kept in ``Measurement.stdout``.

    The child is reaped with ``os.wait4``, whose resource usage is that child's
    alone, so each step's peak resident memory and CPU time are measured separately.
    """
    with tempfile.TemporaryFile() as stderr, tempfile.TemporaryFile() as stdout:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "desweep.cli", *args], stdout=stdout if capture_stdout else subprocess.DEVNULL,
                                stderr=stderr, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        log = stderr.read().decode(errors="replace")[-20000:]
        if proc.returncode != 0:
            raise RuntimeError(f"desweep {args[0]} failed:\n{log[-3000:]}")
        stdout.seek(0)
        output = stdout.read().decode(errors="replace")
    return Measurement(seconds, usage.ru_maxrss / 1024, log, usage.ru_utime + usage.ru_stime, output)
