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
    monkeypatch.setattr(threads, "contended_cores", lambda cores: 100.0)
    auto = threads.choose(None, {})
    assert auto.threads == 1 and auto.source == "auto"
    assert "auto" in auto.describe() and "load 100.0" in auto.describe()
    for bad in ("x", "-1", "1.5"):
        with pytest.raises(threads.ThreadsError, match="--threads"):
            threads.choose(bad, {})
    with pytest.raises(threads.ThreadsError, match="BIOPRIOR_THREADS"):
        threads.choose(None, {"BIOPRIOR_THREADS": "many"})


def test_auto_weighs_the_load_as_the_scheduler_does(monkeypatch):
    """Beside a niced background job the run takes the cores (the old count of busy cores gave
    it one of two); beside another session's busy threads it takes what that session leaves."""
    from bioprior.registry.base import fair_share
    from bioprior.registry.base.fair_share import Competition, Group, nice_weight

    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "_torch_default", lambda: 2)
    monkeypatch.setattr(threads, "load_average", lambda: 2.0)  # both cores busy, by count

    def beside(*groups: Group) -> None:
        monkeypatch.setattr(fair_share, "sample", lambda: Competition((((), groups),)))

    beside(Group(nice_weight(19), (nice_weight(19),) * 2))  # `setsid nice -n 19` workers
    niced = threads.choose(None, {})
    assert niced.threads == 2 and niced.load < 0.1
    beside(Group(nice_weight(0), (nice_weight(0),) * 2))  # another session, two busy threads
    assert threads.choose(None, {}).threads == 1
    beside(Group(nice_weight(0), (nice_weight(0),)))  # one busy thread: it keeps one core
    assert threads.choose(None, {}).threads == 1
    beside()  # a quiet machine
    assert threads.choose(None, {}).threads == 2
    monkeypatch.setattr(fair_share, "sample", lambda: None)  # no /proc: the busy cores
    assert threads.choose(None, {}) == threads.ThreadChoice(1, "auto", 2, 2.0)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="needs Linux's /proc")
def test_auto_takes_the_cores_a_niced_job_leaves(monkeypatch):
    """Two nice-19 busy processes on two cores: the run gets two threads, and two threads of
    it do get about two cores."""
    from test_fair_share import _busy

    if len(os.sched_getaffinity(0)) != 2:
        pytest.skip("written for two usable cores")
    monkeypatch.setattr(threads, "_torch_default", lambda: 2)
    if threads.contended_cores(2) > 0.2:
        pytest.skip("the machine is busy: the test needs it quiet but for its own processes")
    stop = _busy(2, nice=19)
    try:
        import time

        time.sleep(1.0)
        assert threads.busy_cores_now() > 1.5  # busy cores, as the old rule counted: one thread
        choice = threads.choose(None, {})
    finally:
        stop()
    assert choice.threads == 2, choice.describe()


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
