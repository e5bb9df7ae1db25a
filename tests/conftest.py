"""Suite-wide set-up: when a session takes in the integration tests as a whole, the images they start
from are built in the background from its first second (see tests/integration/images.py), so that
on a cold machine the unit tests and the tests on the tiny guest run meanwhile instead of every test
worker waiting for the base image."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import module_times

ROOT = Path(__file__).resolve().parents[1]
INTEGRATION = ROOT / "tests" / "integration"
_background: list[subprocess.Popen[bytes]] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput") or not _whole_integration_suite(config):
        return  # a pytest-xdist worker, or a run of some modules: their fixtures build what they need
    from tests.integration.images import TEST_HOME
    TEST_HOME.mkdir(parents=True, exist_ok=True)
    with open(TEST_HOME / "images.log", "wb") as log:
        _background.append(subprocess.Popen([sys.executable, "-m", "tests.integration.images"], cwd=ROOT,
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True))


def pytest_sessionfinish(session: pytest.Session) -> None:
    for proc in _background:
        if proc.poll() is None:  # the session ended first (interrupted): the builds clean up on SIGTERM
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _whole_integration_suite(config: pytest.Config) -> bool:
    if "not integration" in (config.option.markexpr or ""):
        return False
    for arg in config.args:
        path = (Path(config.invocation_params.dir) / arg.split("::")[0]).resolve()
        if path.is_dir() and INTEGRATION.is_relative_to(path):
            return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    """SIGINT as a terminal delivers it, for the tests that send it: a shell's background job (a CI step,
    `cmd &`) starts with it ignored, and an ignored signal stays ignored in every child. The recorder of
    module times runs where reports arrive: the controller, or the only process."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if config.getoption("record_module_times") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(module_times.Recorder(), "module-times-recorder")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--record-module-times", action="store_true",
                     help="at the end, merge each module's time into tests/module-times.json, "
                          "the order of the next runs (heaviest module first)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    module_times.heaviest_first(items, module_times.load())
