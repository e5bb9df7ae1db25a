"""The small parts that keep failures clean: signals during clean-up, the appliance killed on a
signal, partial cache files swept, names taken atomically, the lock of one set of outputs."""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from imagebuilder import files
from imagebuilder.cache import Cache, sweep_partials
from imagebuilder.guest.session import AbortOnSignal
from imagebuilder.progress import Reporter
from imagebuilder.undo import Undo


def test_a_signal_during_clean_up_does_not_cut_it_short():
    stream = io.StringIO()
    undo = Undo(Reporter("plain", stream))
    ran = []
    undo.temporary("first", lambda: ran.append("first"))
    undo.temporary("second", lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(0.1), ran.append("second")))
    undo.finish(failed=True)  # newest first: "second" sends Ctrl-C to us, "first" must still run
    assert ran == ["second", "first"]
    assert "SIGINT received during clean-up; finishing the clean-up first" in stream.getvalue()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):  # outside the clean-up, Ctrl-C works again
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)


def test_the_appliance_is_killed_at_once_on_a_signal(tmp_path):
    fake_qemu = tmp_path / "qemu-system-x86_64"   # its comm starts with "qemu", like the appliance's
    shutil.copy("/bin/sleep", fake_qemu)
    bystander = subprocess.Popen(["/bin/sleep", "60"])
    appliance = subprocess.Popen([str(fake_qemu), "60"])
    watch = AbortOnSignal()
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        assert appliance.wait(timeout=5) == -signal.SIGKILL
        assert bystander.poll() is None  # only qemu
    finally:
        watch.stop()
        for proc in (appliance, bystander):
            proc.kill()
            proc.wait()
    assert signal.set_wakeup_fd(-1) == -1  # given back


def test_partial_files_of_dead_writers_are_swept(tmp_path):
    stale, fresh, held = (tmp_path / f".partial-{n}" for n in ("stale", "fresh", "held"))
    for path in (stale, fresh, held):
        path.write_bytes(b"x")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(held, (old, old))
    with open(held) as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # a writer still at work
        assert sweep_partials(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".partial-fresh", ".partial-held"]


def test_a_writer_holds_its_partial_file(tmp_path):
    cache = Cache(tmp_path)
    with cache.writing("images") as tmp:
        old = time.time() - 3600
        os.utime(tmp, (old, old))
        assert sweep_partials(tmp.parent) == []
        cache.commit(tmp, "images", "entry")
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["entry"]


def test_place_never_overwrites_without_replace(tmp_path):
    (tmp_path / "mine").write_text("mine")
    (tmp_path / "theirs").write_text("theirs")
    with pytest.raises(FileExistsError):
        files.place(tmp_path / "mine", tmp_path / "theirs", replace=False)
    assert (tmp_path / "theirs").read_text() == "theirs" and (tmp_path / "mine").exists()
    files.place(tmp_path / "mine", tmp_path / "new", replace=False)
    assert (tmp_path / "new").read_text() == "mine" and not (tmp_path / "mine").exists()
    files.place(tmp_path / "new", tmp_path / "theirs", replace=True)
    assert (tmp_path / "theirs").read_text() == "mine"


def test_a_lock_says_when_it_waits(tmp_path):
    cache, waited, order = Cache(tmp_path), [], []
    held, release = threading.Event(), threading.Event()

    def first() -> None:
        with cache.lock("outputs"):
            held.set()
            release.wait(5)
            order.append("first")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(5)
    threading.Timer(0.2, release.set).start()
    with cache.lock("outputs", on_wait=lambda: waited.append(True)):
        order.append("second")
    thread.join()
    assert waited == [True] and order == ["first", "second"]
    with cache.lock("outputs", on_wait=lambda: waited.append(True)):
        pass
    assert waited == [True]  # free: no waiting said
