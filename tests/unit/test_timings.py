"""Phase timings: recorded under the stage that runs them, shown at -v, tabulated with what is left over."""

from __future__ import annotations

import io

import pytest

from imagebuilder.progress import Reporter
from imagebuilder.timings import table


def test_phases_belong_to_the_stage_running_and_are_kept_when_the_block_fails():
    reporter = Reporter(mode="plain", stream=io.StringIO())
    with reporter.stage("customize"):
        with reporter.phase("launch"):
            pass
        with pytest.raises(RuntimeError), reporter.phase("step 1 (install)"):
            raise RuntimeError("apt failed")
    with reporter.phase("records"):
        pass
    assert [(r["stage"], r["phase"]) for r in reporter.phases.records] == [
        ("customize", "launch"), ("customize", "step 1 (install)"), ("build", "records")]
    assert all(r["seconds"] >= 0 for r in reporter.phases.records)


def test_verbose_reporter_says_each_phase_as_it_ends_and_a_quiet_one_does_not():
    loud, quiet = io.StringIO(), io.StringIO()
    for stream, verbose in ((loud, True), (quiet, False)):
        reporter = Reporter(mode="plain", stream=stream, verbose=verbose)
        with reporter.stage("deploy"), reporter.phase("boot wait"):
            pass
    assert "[deploy] time: boot wait 0.0s" in loud.getvalue().splitlines()
    assert "time:" not in quiet.getvalue()


def test_table_adds_up_repeated_phases_and_shows_the_rest_as_other():
    stages = {"prepare": 2.0, "customize": 50.0}
    phases = [{"stage": "customize", "phase": "launch", "seconds": 12.0},
              {"stage": "customize", "phase": "step 1 (install)", "seconds": 20.0},
              {"stage": "customize", "phase": "launch", "seconds": 13.0}]
    lines = table(stages, phases)
    assert lines[1].split() == ["prepare", "2.0", "3.8%"]
    assert lines[3].split()[:2] == ["launch", "25.0"]
    assert [ln.split()[0] for ln in lines[2:]] == ["customize", "launch", "step", "other", "total"]
    assert lines[-2].split()[:2] == ["other", "5.0"]
    assert lines[-1].split() == ["total", "52.0"]
