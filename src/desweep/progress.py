"""Progress lines for long steps (training, the DE sweep, the normalized export).

One line per tenth of the work (and at the first unit, so the speed shows
early), plus one when ``max_silence`` seconds pass without a line, so a log file
gets a bounded number of lines however long the step runs::

    training: epoch 10/100 (10%), ELBO train 1203.4, validation 1211.9; 42 s elapsed, about 378 s left
"""

from __future__ import annotations

import logging
import math
import time

#: a line at least this often (seconds) while work is done, whatever the fraction
MAX_SILENCE_S = 300.0


class ProgressLog:
    """Log ``<what>: <unit> done/total (pct)[, detail]; elapsed, about remaining`` at bounded intervals.

    Parameters
    ----------
    logger
        The step's module logger (lines are INFO).
    what
        The step, e.g. ``"training"``.
    total
        Units of work (epochs, sampling keys, cells).
    unit
        The unit's name in the line, e.g. ``"epoch"``.
    fraction
        A line each time this share of ``total`` is completed (``0.1``: every 10 %).
    max_silence
        A line whenever this many seconds passed since the last one.
    bound
        ``"about"`` for an estimate of the remaining time; ``"at most"`` when
        the work may stop early (training with early stopping).

    Examples
    --------
    >>> progress = ProgressLog(logging.getLogger("desweep.example"), "export", 3000, unit="cells")
    >>> for stop in range(1024, 3000 + 1024, 1024):
    ...     progress.update(min(stop, 3000))
    """

    def __init__(self, logger: logging.Logger, what: str, total: int, *, unit: str, fraction: float = 0.1,
                 max_silence: float = MAX_SILENCE_S, bound: str = "about") -> None:
        self.logger = logger
        self.what = what
        self.total = max(int(total), 1)
        self.unit = unit
        self.step = max(1, math.ceil(self.total * fraction))
        self.max_silence = max_silence
        self.bound = bound
        self.started = time.perf_counter()
        self._last_line = self.started
        self._next = 1  # the first unit, then every `step` units
        self.lines = 0

    def update(self, done: int, detail: str = "") -> bool:
        """Record that ``done`` units are complete; log a line when one is due. Returns whether it logged."""
        now = time.perf_counter()
        due = done >= self._next or done >= self.total or now - self._last_line >= self.max_silence
        if not due:
            return False
        while self._next <= done:
            self._next = self.step * (self._next // self.step + 1)
        elapsed = now - self.started
        remaining = elapsed / max(done, 1) * max(self.total - done, 0)
        left = f", {self.bound} {format_seconds(remaining)} left" if done < self.total else ""
        self.logger.info("%s: %s %d/%d (%d%%)%s; %s elapsed%s", self.what, self.unit, done, self.total,
                         100 * done // self.total, f", {detail}" if detail else "", format_seconds(elapsed), left)
        self._last_line = now
        self.lines += 1
        return True


def format_seconds(seconds: float) -> str:
    """``42 s``, ``12.5 min``, ``3.2 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
