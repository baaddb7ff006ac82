"""Progress lines of long steps: bounded in number, at least one per tenth of the work."""

from __future__ import annotations

import itertools
import logging
import re
from types import SimpleNamespace

import pytest

from desweep.progress import ProgressLog, format_seconds

LOGGER = "desweep.test_progress"


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER or r.name == "desweep.integrate"]


@pytest.mark.parametrize("total", [7, 10, 100, 400, 2501])
def test_a_line_at_the_first_unit_and_every_tenth_and_no_more(caplog, total):
    caplog.set_level(logging.INFO, logger=LOGGER)
    progress = ProgressLog(logging.getLogger(LOGGER), "work", total, unit="item")
    for done in range(1, total + 1):
        progress.update(done)
    logged = [int(re.search(r"item (\d+)/", line).group(1)) for line in _lines(caplog)]
    assert logged[0] == 1 and logged[-1] == total
    gaps = [b - a for a, b in itertools.pairwise(logged)]
    assert max(gaps) <= -(-total // 10), "a line at least every tenth of the work"
    assert len(logged) <= 12, "nothing floods a log file"


def test_a_line_after_long_silence_and_chunked_updates(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = iter(range(0, 10_000, 100))  # each call to perf_counter advances 100 s
    monkeypatch.setattr("desweep.progress.time.perf_counter", lambda: float(next(clock)))
    progress = ProgressLog(logging.getLogger(LOGGER), "export", 1000, unit="cells", max_silence=250)
    for done in (2, 3, 4, 5, 1000):  # large first chunk, then 100 s per update
        progress.update(done)
    lines = _lines(caplog)
    assert lines[0].startswith("export: cells 2/1000 (0%); 100 s elapsed, about")
    assert "cells 5/1000" in lines[1]  # 300 s after the first line: the silence limit
    assert lines[-1] == "export: cells 1000/1000 (100%); 8.3 min elapsed"


def test_training_progress_logs_epoch_elbo_and_remaining_time(caplog):
    import torch

    from desweep.integrate import training_progress

    caplog.set_level(logging.INFO, logger="desweep.integrate")
    callback = training_progress(100, early_stopping=True)
    trainer = SimpleNamespace(current_epoch=0, callback_metrics={})
    callback.on_train_start(trainer, None)
    for epoch in range(100):
        trainer.current_epoch = epoch
        trainer.callback_metrics = {"elbo_train": torch.tensor(1000.0 - epoch), "elbo_validation": torch.tensor(1100.0 - epoch)}
        callback.on_train_epoch_end(trainer, None)
    lines = _lines(caplog)
    assert len(lines) == 11
    assert re.fullmatch(r"training: epoch 10/100 \(10%\), ELBO train 991\.0, validation 1091\.0; \d+ s elapsed, at most \d+ s left",
                        lines[1]), lines[1]


def test_format_seconds():
    assert [format_seconds(s) for s in (4.2, 150, 9000)] == ["4 s", "2.5 min", "2.5 h"]
