"""``bench.paired``'s figure: each trial's ratio of the second contender's CPU per call to the
first's, and their median, from the trials as measured."""

from __future__ import annotations

import pytest
from bench import paired


def test_each_trial_is_its_own_ratio_and_the_summary_their_median():
    first, second = [1.0, 2.0, 1.5], [0.9, 1.9, 1.5]
    assert paired.ratios(first, second) == pytest.approx([0.9, 0.95, 1.0])
    line = paired.summary(("before", "after"), first, second)
    assert line.startswith("after / before, CPU per call: median 0.950 ")
    assert "trials 0.900, 0.950, 1.000" in line


def test_trials_of_unequal_number_are_refused():
    with pytest.raises(ValueError):
        paired.ratios([1.0, 2.0], [1.0])
