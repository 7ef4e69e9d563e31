"""The plan's load model shares the cores as the kernel's fair scheduler does: by nice weight and,
where autogroups are on, by session; the numbers written out, a fake /proc read, and the model
against what a busy process in this machine's scheduler really gets."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bioprior.registry.base import fair_share
from bioprior.registry.base.fair_share import Competition, Group, nice_weight, water_fill
from bioprior.registry.base.threads import CoreShare

W0 = nice_weight(0)


def test_nice_weights_follow_the_kernel_table():
    # kernel/sched/core.c sched_prio_to_weight: nice 0 1024, nice 5 335, nice 10 110, 19 15
    assert nice_weight(0) == 1024
    for nice, kernel in ((5, 335), (10, 110), (19, 15), (-5, 3121)):
        assert nice_weight(nice) == pytest.approx(kernel, rel=0.03)


def test_water_fill_gives_what_a_capped_claim_leaves_to_the_others():
    assert water_fill(2.0, [(1, 1), (1, 1)]) == [1.0, 1.0]
    assert water_fill(2.0, [(1, 1), (1, 4)]) == [1.0, 1.0]
    assert water_fill(2.0, [(1, 2), (1, 4), (2, 4)]) == pytest.approx([0.5, 0.5, 1.0])
    assert water_fill(3.0, [(1, 1), (1, 5)]) == [1.0, 2.0]
    assert water_fill(1.0, [(0, 1), (1, 0), (3, 1)]) == [0.0, 0.0, 1.0]


def _share(same=(), other=(), own_group=W0, own_thread=W0) -> Competition:
    return Competition(((tuple(same), tuple(other)),), own_thread, own_group)


def test_equal_threads_in_one_group_share_as_the_old_count_did():
    """Without nice or sessions the fair share is the equal share: t * min(1, c / (W t + L))."""
    for threads, workers, load in ((1, 2, 0), (2, 1, 1), (1, 1, 3), (1, 4, 2)):
        plain = CoreShare(threads, workers, 2, float(load))
        fair = CoreShare(threads, workers, 2, float(load), _share(same=(W0,) * load))
        assert fair.per_step == pytest.approx(plain.per_step)
        assert fair.slowdown == pytest.approx(plain.slowdown)


def test_a_niced_job_takes_little_and_another_session_takes_half():
    w19 = nice_weight(19)
    niced = _share(same=(w19,) * 2)  # two nice-19 threads in the run's session
    assert CoreShare(2, 1, 2, 2.0, niced).per_step == pytest.approx(2 * 2048 / (2048 + 2 * w19))
    assert CoreShare(2, 1, 2, 2.0).per_step == 1.0  # counted as equals: half the machine
    # another session (autogroup nice 0) with four busy threads: it gets one core, not two
    session = _share(other=(Group(W0, (W0,) * 4),))
    assert CoreShare(2, 1, 2, 4.0, session).per_step == pytest.approx(1.0)
    assert CoreShare(1, 1, 2, 4.0, session).per_step == pytest.approx(1.0)
    assert CoreShare(2, 1, 2, 4.0).per_step == pytest.approx(2 * 2 / 6)
    # the same session at autogroup nice 19, as `nohup setsid nice ...` jobs often run
    background = _share(other=(Group(nice_weight(19), (nice_weight(19),) * 4),))
    assert CoreShare(2, 1, 2, 4.0, background).per_step == pytest.approx(2 * 1024 / (1024 + w19))
    # a pool of one process per core beside that session: the pool's speed-up over one process
    assert CoreShare(1, 1, 2, 4.0, session).pool_speedup == pytest.approx(1.0)


def test_threads_outside_any_session_compete_one_by_one():
    # one thread of ours in no autogroup, beside a session of four busy threads: a core each
    session = Group(W0, (W0,) * 4)
    assert Competition((((), (session,)),), W0, None).share(1, 2) == pytest.approx(1.0)
    # two of ours and a third ungrouped thread beside it: 2 cores over 4 equal entities
    assert Competition((((W0,), (session,)),), W0, None).share(2, 2) == pytest.approx(0.5)


def test_samples_are_averaged():
    quiet, busy = ((), ()), ((W0, W0), ())
    competition = Competition((quiet, busy))
    assert competition.load == 1.0
    assert competition.share(1, 2) == pytest.approx((1.0 + 2 / 3) / 2)


def _fake_proc(tmp_path: Path, autogroups: str, tasks: dict[str, tuple[str, int, str]]) -> Path:
    """/proc with ``tasks``: pid -> (state, nice, autogroup line), one thread each."""
    proc = tmp_path / "proc"
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "sys/kernel/sched_autogroup_enabled").write_text(autogroups)
    (proc / "self").mkdir()
    (proc / "self/cgroup").write_text("1:cpu:/\n0::/\n")
    (proc / "loadavg").write_text(f"1.0 1.0 1.0 {len(tasks) + 1}/99 123\n")
    for pid, (state, nice, group) in tasks.items():
        task = proc / pid / "task" / pid
        task.mkdir(parents=True)
        fields = [state] + ["0"] * 15 + [str(nice)] + ["1"] * 30
        (task / "stat").write_text(f"{pid} (busy (x)) " + " ".join(fields) + "\n")
        (proc / pid / "autogroup").write_text(group + "\n")
    return proc


def test_sample_reads_runnable_threads_their_nice_and_sessions(tmp_path):
    tasks = {
        "100": ("R", 0, "/autogroup-7 nice 0"),  # this run's session (own pid 100 skipped)
        "101": ("R", 19, "/autogroup-7 nice 0"),  # niced, in this run's session
        "102": ("R", 0, "/autogroup-9 nice 19"),  # another session, niced as a whole
        "103": ("R", 0, "/autogroup-9 nice 19"),
        "104": ("S", 0, "/autogroup-9 nice 19"),  # asleep: not counted
    }
    proc = _fake_proc(tmp_path, "1", tasks)
    competition = fair_share.sample(0.0, samples=2, proc=proc, own_pid=100)
    assert competition.load == 3.0
    same, other = competition.samples[0]
    assert same == pytest.approx((nice_weight(19),))
    assert other == (Group(pytest.approx(nice_weight(19)), pytest.approx((W0, W0))),)
    assert competition.own_group_weight == W0
    # this process in no autogroup (a service's): its threads compete one by one, as do the
    # other ungrouped ones, beside the sessions' groups
    rooted = {**tasks, "100": ("R", 0, ""), "105": ("R", 0, "")}
    alone = fair_share.sample(
        0.0, samples=1, proc=_fake_proc(tmp_path / "c", "1", rooted), own_pid=100
    )
    assert alone.own_group_weight is None
    same, other = alone.samples[0]
    assert same == pytest.approx((W0,))  # 105; 101 is in a session (autogroup 7) of its own
    assert sorted(len(g.threads) for g in other) == [1, 2]
    # autogroups off: every thread competes alone, by its nice
    flat = fair_share.sample(
        0.0, samples=1, proc=_fake_proc(tmp_path / "b", "0", tasks), own_pid=100
    )
    assert sorted(flat.samples[0][0]) == pytest.approx([nice_weight(19), W0, W0])
    assert flat.samples[0][1] == ()


def _busy(n: int, *, nice: int = 0, own_session: bool = False) -> Callable[[], None]:
    """Start ``n`` busy processes, in this session or all in one of their own (started by one
    shell, the leader of a new session); returns what stops them."""
    spin = f"import os; os.nice({nice})\nwhile True: pass"
    if not own_session:
        procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(n)]
        return lambda: [(p.kill(), p.wait()) for p in procs]
    script = " & ".join([f"{shlex.quote(sys.executable)} -c {shlex.quote(spin)}"] * n) + " & wait"
    shell = subprocess.Popen(["sh", "-c", script], start_new_session=True)

    def stop() -> None:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()

    return stop


def _cores_used(seconds: float = 3.0) -> float:
    """Cores a one-thread busy process of this session gets now."""
    code = (
        "import time\n"
        "t0, c0 = time.monotonic(), time.process_time()\n"
        f"while time.monotonic() < t0 + {seconds}: pass\n"
        "print((time.process_time() - c0) / (time.monotonic() - t0))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/loadavg").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("case", ["niced", "own session"])
def test_the_model_predicts_what_the_scheduler_gives(case):
    """A one-thread busy process beside two busy processes that are niced (19) or in a session
    of their own gets the cores the fair-share model says (within 20%), where counting runnable
    threads as equals said two thirds of a core."""
    if case == "own session" and not fair_share.autogroups_on():
        pytest.skip("autogroups are off here: a session is no scheduling group")
    if os.cpu_count() is None or len(os.sched_getaffinity(0)) != 2:
        pytest.skip("written for two usable cores")
    own_session = case == "own session"
    stop = _busy(2, nice=0 if own_session else 19, own_session=own_session)
    try:
        time.sleep(1.0)
        share = CoreShare.now(1, 1, 2)
        used = _cores_used()
    finally:
        stop()
    assert share.competition is not None and share.load >= 1.5
    assert CoreShare(1, 1, 2, share.load).per_step < 0.8  # the equal count: about 2/3
    assert used == pytest.approx(share.per_step, rel=0.2)
    assert share.per_step > 0.9
