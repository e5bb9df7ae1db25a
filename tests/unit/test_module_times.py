"""The suite's own scheduling aid: heaviest modules first, times merged from a run."""

from __future__ import annotations

import json
from types import SimpleNamespace

from tests import module_times


def _item(nodeid: str) -> SimpleNamespace:
    return SimpleNamespace(nodeid=nodeid)


def test_unit_modules_first_then_heaviest_first_and_inner_order_kept():
    items = [_item("tests/unit/test_a.py::t1"), _item("tests/integration/test_b.py::t2"),
             _item("tests/unit/test_a.py::t3"), _item("tests/integration/test_c.py::t4"),
             _item("tests/integration/test_b.py::t5")]
    module_times.heaviest_first(items, {"tests/integration/test_b.py": 300.0, "tests/integration/test_c.py": 90.0})
    assert [i.nodeid.rsplit("::", 1)[1] for i in items] == ["t1", "t3", "t2", "t5", "t4"]


def test_recorded_times_add_up_per_module_and_merge_into_the_file(tmp_path):
    path = tmp_path / "times.json"
    path.write_text(json.dumps({"tests/unit/test_old.py": 5.0, "tests/unit/test_a.py": 99.0}))
    recorder = module_times.Recorder(path)
    for nodeid, seconds in [("tests/unit/test_a.py::t1", 1.25), ("tests/unit/test_a.py::t1", 2.0),
                            ("tests/integration/test_b.py::t2", 40.0)]:
        recorder.pytest_runtest_logreport(SimpleNamespace(nodeid=nodeid, duration=seconds))
    recorder.pytest_sessionfinish(None)
    assert json.loads(path.read_text()) == {"tests/integration/test_b.py": 40.0,
                                            "tests/unit/test_old.py": 5.0, "tests/unit/test_a.py": 3.2}
    assert list(module_times.load(path))[0] == "tests/integration/test_b.py"


def test_no_times_file_means_no_weights(tmp_path):
    assert module_times.load(tmp_path / "absent.json") == {}
