"""``bench.paired``'s figure: each trial's ratio of the second contender's CPU per call to the
first's, and their median, from the trials as measured; and the calls of its
``--dialled-users`` (``bench.drive.dialled_scenario``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench import drive, paired
from harness import testbed


def test_each_trial_is_its_own_ratio_and_the_summary_their_median():
    first, second = [1.0, 2.0, 1.5], [0.9, 1.9, 1.5]
    assert paired.ratios(first, second) == pytest.approx([0.9, 0.95, 1.0])
    line = paired.summary(("before", "after"), first, second)
    assert line.startswith("after / before, CPU per call: median 0.950 ")
    assert "trials 0.900, 0.950, 1.000" in line


def test_trials_of_unequal_number_are_refused():
    with pytest.raises(ValueError):
        paired.ratios([1.0, 2.0], [1.0])


def test_a_dialled_users_call_dials_a_user_of_its_own_and_nothing_else_changes(tmp_path: Path):
    scenario = drive.dialled_scenario(tmp_path)
    assert scenario.name == "uac.xml"  # SIPp names its statistics after it
    shipped = (testbed.SIPP_SCENARIOS / "uac.xml").read_text().splitlines()
    dialled = scenario.read_text().splitlines()
    changed = [(a.strip(), b.strip()) for a, b in zip(shipped, dialled, strict=True) if a != b]
    assert changed[0][1].startswith(f"INVITE sip:{drive.DIALLED_USER}@")
    assert all(b == a.replace("[service]", drive.DIALLED_USER) for a, b in changed)
    assert all(b.startswith("To: ") for _, b in changed[1:])
