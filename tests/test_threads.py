"""Thread choice (registry/threads.py): the default never oversubscribes; overrides win."""

from __future__ import annotations

import os

import pytest
import torch

from bioprior.registry.base import threads


def test_auto_uses_the_cores_not_already_busy():
    # two busy loops on two cores: one thread, not torch's two
    assert threads.auto_threads(cores=2, load=2.0) == 1
    assert threads.auto_threads(cores=2, load=0.1) == 2
    assert threads.auto_threads(cores=8, load=3.2) == 5
    assert threads.auto_threads(cores=8, load=30.0) == 1  # never zero
    assert threads.auto_threads(cores=16, load=0.0, ceiling=8) == 8  # torch's physical cores
    assert threads.auto_threads(cores=4, load=None) == 4  # no load average (not Linux)


def test_choice_order_and_errors(monkeypatch):
    env = {"BIOPRIOR_THREADS": "3", "OMP_NUM_THREADS": "2"}
    assert threads.choose("4", env).threads == 4 and threads.choose("4", env).source == "--threads"
    assert threads.choose(None, env) == threads.ThreadChoice(
        3, "BIOPRIOR_THREADS", threads.usable_cores()
    )
    assert threads.choose("auto", {"OMP_NUM_THREADS": "2"}).source == "OMP_NUM_THREADS"
    monkeypatch.setattr(threads, "load_average", lambda: 100.0)
    auto = threads.choose(None, {})
    assert auto.threads == 1 and auto.source == "auto"
    assert "auto" in auto.describe() and "load 100.0" in auto.describe()
    for bad in ("x", "-1", "1.5"):
        with pytest.raises(threads.ThreadsError, match="--threads"):
            threads.choose(bad, {})
    with pytest.raises(threads.ThreadsError, match="BIOPRIOR_THREADS"):
        threads.choose(None, {"BIOPRIOR_THREADS": "many"})


def test_cgroup_quota_caps_the_cores(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert threads._cgroup_quota(cpu_max) == 2
    cpu_max.write_text("max 100000\n")
    assert threads._cgroup_quota(cpu_max) is None
    assert threads._cgroup_quota(tmp_path / "absent") is None


def test_using_applies_and_restores():
    before = torch.get_num_threads()
    with threads.using(threads.ThreadChoice(1, "--threads", 2)):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_api_score_records_and_restores_threads(bioprior_home, write_submission):
    from conftest import tiny_submission

    import bioprior

    before = torch.get_num_threads()
    seen = []
    rows = bioprior.score(
        write_submission(tiny_submission(training={"dataset": "digits", "epochs": 1})),
        device="cpu",
        threads=1,
        progress=lambda e: seen.append((e.kind, torch.get_num_threads())),
    )
    assert rows[0]["status"] == "ok"
    assert {n for _, n in seen} == {1}  # the whole run used the chosen count
    assert torch.get_num_threads() == before  # and the caller's setting is back


def test_the_load_is_what_runs_now_when_the_average_still_counts_a_finished_job(monkeypatch):
    """Right after a `pip install` the 1-minute load average still says 1-2 busy cores: the
    cores busy right now (none) decide, so a first run on an idle machine gets every core."""
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.8, 1.0, 0.5))
    monkeypatch.setattr(threads, "busy_cores_now", lambda: 0.05)
    assert threads.load_average() == 0.05
    monkeypatch.setattr(threads, "busy_cores_now", lambda: 3.0)  # a burst: the average decides
    assert threads.load_average() == 1.8


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="no /proc/stat (not Linux)")
def test_a_busy_process_shows_as_a_busy_core_now():
    import subprocess
    import sys

    idle = threads.busy_cores_now(0.3)
    assert idle is not None
    if idle > threads.usable_cores() - 0.7:  # another process keeps every core busy already
        pytest.skip(f"{idle:.1f} cores already busy: one more spinning process cannot show")
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)  # its start-up
        busy = threads.busy_cores_now(0.5)
    finally:
        spin.kill()
        spin.wait()
    assert busy >= idle + 0.6  # one core spinning (ours, sleeping, is not counted)
