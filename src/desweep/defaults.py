"""Defaults that a library function and an option share, where the function's module is too heavy for the options to import.

:mod:`desweep.params` builds every command's options at start-up; reading a default from
``desweep.diagnose`` there would import scipy.stats and the bridge for every command
(about a second). The function and the :class:`~desweep.params.Param` both read the value
here instead (tests/test_params.py compares every Param's default with its function's).
"""

from __future__ import annotations

#: top genes of each DE table that ``desweep diagnose`` classifies (and baselines rank, and the layers hold)
CLASSIFIED_TOP_N = 50
#: share of the group difference a within-batch (or batch) difference must reach to explain it
EXPLAINED_FRACTION = 0.5
#: one-sided level of the classification's per-gene test
ALPHA = 0.01
