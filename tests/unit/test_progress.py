"""Progress output: plain lines when not at a terminal, JSON lines with --json."""

from __future__ import annotations

import io
import json

from imagebuilder.progress import Reporter


def test_plain_mode_prints_stage_lines_and_a_final_transfer_line():
    stream = io.StringIO()
    reporter = Reporter(mode="plain", stream=stream)
    with reporter.stage("fetch"):
        transfer = reporter.transfer("download base.qcow2", 2048)
        transfer.advance(2048)
        transfer.finish()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "==> fetch"
    assert "download base.qcow2: 100% 2.0 KiB/2.0 KiB" in lines[1]
    assert lines[-1].strip().startswith("fetch done in")
    assert "\r" not in stream.getvalue()
    assert "fetch" in reporter.timings


def test_tty_mode_draws_a_bar():
    stream = io.StringIO()
    transfer = Reporter(mode="tty", stream=stream).transfer("upload", 100)
    transfer.set(50)
    transfer.finish()
    assert "[###############---------------]  50%" in stream.getvalue()
    assert stream.getvalue().endswith("\n")


def test_json_mode_writes_events_to_stdout(capsys):
    reporter = Reporter(mode="json", stream=io.StringIO())
    with reporter.stage("publish"):
        reporter.info("volume: default/x.qcow2")
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["stage", "info", "stage"]
    assert events[0] == {"event": "stage", "stage": "publish", "state": "start", "message": "==> publish"}
    assert events[-1]["state"] == "done" and isinstance(events[-1]["seconds"], float)
