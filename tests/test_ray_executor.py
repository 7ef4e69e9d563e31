"""The Ray executor against a real local Ray cluster that the test starts on 127.0.0.1 and stops:
the rows equal those of the local executor; a lost worker is retried then stored as failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, tiny_submission
from faulty_plugins import faulty_submission, install

from bioprior.registry.store.results import ResultStore

pytest.importorskip("ray", reason='ray is not installed (pip install "bioprior[ray]")')

# Ray resolves 127.0.0.1 to the machine's outward address unless told it is not a cluster:
# with this, the head and every driver use the loopback address only.
LOOPBACK = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _stop(proc: subprocess.Popen) -> None:
    """Stop the cluster: its processes share the process group of the `ray start` we began."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + grace
        while time.time() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """``ray start --head`` on 127.0.0.1 with 2 CPUs, its temp dir in the test's tmp folder (a
    short one: Ray's socket paths must fit in 107 bytes), with the faulty plugins installed."""
    root = tmp_path_factory.mktemp("ray")
    site = install(root / "site")
    (root / "tmp").mkdir()
    env = {
        **os.environ,
        **LOOPBACK,
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(root / "tmp"),  # where workers keep their own homes (object-store)
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
    }
    ray_bin = Path(sys.executable).with_name("ray")
    cmd = [str(ray_bin), "start", "--head", "--block", "--port=0", "--node-ip-address=127.0.0.1"]
    cmd += ["--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"]
    cmd += ["--temp-dir", str(root / "t")]
    log = open(root / "ray.log", "w")  # noqa: SIM115 - open while the cluster runs
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    marker = root / "t" / "ray_current_cluster"
    try:
        deadline = time.time() + 120
        while not (marker.exists() and marker.read_text().strip()):
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"ray start failed: {(root / 'ray.log').read_text()[-2000:]}")
            time.sleep(0.5)
        address = marker.read_text().strip()
        assert address.startswith("127.0.0.1:"), address
        time.sleep(2)  # the raylet registers just after the head's address is written
        yield {"address": address, "site": site, "env": env, "tmp": root / "tmp"}
    finally:
        _stop(proc)
        log.close()


def _rows(home: Path) -> list[dict]:
    out = run_cli("results", "--format", "json", env={"BIOPRIOR_HOME": str(home)})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _comparable(rows: list[dict]) -> list[tuple]:
    keep = ("submission", "job_key", "seed", "benchmark", "status", "score", "weights_hash")
    return sorted(
        (tuple(r[k] for k in keep), json.dumps(r["metrics"], sort_keys=True)) for r in rows
    )


@pytest.mark.slow
def test_ray_rows_equal_local_rows_and_failures_are_stored(ray_cluster, tmp_path, write_submission):
    env = {**ray_cluster["env"]}
    good = write_submission(tiny_submission("ray-tiny", seeds=[0, 1]))
    crash = write_submission(faulty_submission("ray-segfault", "segfault", limits={"retries": 1}))
    hang = write_submission(faulty_submission("ray-hang", "hang", limits={"timeout_s": 5}))
    hog = write_submission(faulty_submission("ray-hog", "hog", limits={"memory": "1500M"}))
    ray_home, local_home = tmp_path / "ray-home", tmp_path / "local-home"
    res = run_cli(
        "score",
        str(good),
        str(crash),
        str(hang),
        str(hog),
        "--device",
        "cpu",
        "--executor",
        "ray",
        "--ray-address",
        ray_cluster["address"],
        env={**env, "BIOPRIOR_HOME": str(ray_home)},
    )
    assert res.returncode == 1, res.stderr  # three failed jobs, stored
    local = run_cli(
        "score", str(good), "--device", "cpu", env={**env, "BIOPRIOR_HOME": str(local_home)}
    )
    assert local.returncode == 0, local.stderr
    ray_rows = _rows(ray_home)
    by_sub = {r["submission"]: r for r in ray_rows}
    assert by_sub["ray-segfault"]["error_class"] == "worker_lost"
    assert "after 2 attempts" in by_sub["ray-segfault"]["error"]
    assert by_sub["ray-hang"]["error_class"] == "timeout"
    assert by_sub["ray-hog"]["error_class"] == "out_of_memory"  # in a fresh worker process
    tiny_rows = [r for r in ray_rows if r["submission"] == "ray-tiny"]
    assert len(tiny_rows) == 2 and all(r["status"] == "ok" for r in tiny_rows)
    assert _comparable(tiny_rows) == _comparable(_rows(local_home))
    weights = sorted(p.name for p in (ray_home / "weights").glob("*.safetensors"))
    assert weights == sorted(p.name for p in (local_home / "weights").glob("*.safetensors"))


def _checked_weights(folder: Path) -> dict[str, bytes]:
    """Every weights file in a store, each checked against the tensors hash stored in it."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from bioprior.registry.base.atomic import TENSORS_HASH_KEY, check_tensors

    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as fh:
            metadata = fh.metadata()
        assert TENSORS_HASH_KEY in metadata, path
        check_tensors(path, load_file(str(path)), metadata)  # raises on a mismatch
        out[path.stem] = path.read_bytes()
    return out


def _transport_line(home: Path, trained: int, sent: int) -> str:
    """The run's summary of the object-store transport (four evaluations' installs, no retrain)."""
    return (
        f"weights through Ray's object store: {trained} trained and stored in "
        f"{home / 'weights'}, {sent} sent from it, 4 installed by evaluations, "
        "0 trained again by an evaluation"
    )


@pytest.mark.slow
def test_ray_object_store_moves_weights_without_a_shared_path(
    ray_cluster, tmp_path, write_submission
):
    """--weights-transport object-store: trainings run in the workers' own homes (temp folders),
    their files come back through the object store into the driver's store, and evaluations get
    them (trained in this sweep or cached from an earlier one) as task arguments."""
    env = {**ray_cluster["env"]}
    ray_args = ["--device", "cpu", "--executor", "ray", "--ray-address", ray_cluster["address"]]
    ray_args += ["--weights-transport", "object-store"]
    first = write_submission(tiny_submission("ray-store", seeds=[0, 1]))
    ray_home, local_home = tmp_path / "ray-home", tmp_path / "local-home"
    res = run_cli("score", str(first), *ray_args, env={**env, "BIOPRIOR_HOME": str(ray_home)})
    assert res.returncode == 0, res.stderr
    # 2 seeds x (natural + random labels) trainings; each evaluation installs its 2
    assert _transport_line(ray_home, trained=4, sent=0) in " ".join(res.stdout.split()), res.stdout
    trained = [line for line in res.stdout.splitlines() if line.startswith("  trained ")]
    assert len(trained) == 4 and all(" on cpu: last epoch loss " in t for t in trained), trained
    done = [line.split(" ray-store")[0] for line in res.stdout.splitlines() if " done " in line]
    assert done == ["[1/2] done", "[2/2] done"], res.stdout  # counted as they come back
    local = run_cli(
        "score", str(first), "--device", "cpu", env={**env, "BIOPRIOR_HOME": str(local_home)}
    )
    assert local.returncode == 0, local.stderr
    assert _comparable(_rows(ray_home)) == _comparable(_rows(local_home))
    stored = _checked_weights(ray_home / "weights")
    assert len(stored) == 4 and stored.keys() == _checked_weights(local_home / "weights").keys()
    # the workers kept their own homes (temp folders), and nothing of the weights in them
    worker_homes = sorted(ray_cluster["tmp"].glob("bioprior-worker-*"))
    assert worker_homes and not [p for h in worker_homes for p in h.rglob("*.safetensors")]

    # the same jobs for another submission: the trainings are cached in the driver's store; with a
    # memory limit every task runs in a fresh worker process (no model in memory, an empty home),
    # so an evaluation either gets the weights from the object store or trains again
    second = write_submission(tiny_submission("ray-store-again", seeds=[0, 1]))
    res = run_cli(
        "score",
        str(second),
        *ray_args,
        "--memory-limit",
        "4G",
        env={**env, "BIOPRIOR_HOME": str(ray_home)},
    )
    assert res.returncode == 0, res.stderr
    assert _transport_line(ray_home, trained=0, sent=4) in " ".join(res.stdout.split()), res.stdout
    rows = _rows(ray_home)
    again = [r for r in rows if r["submission"] == "ray-store-again"]
    assert len(again) == 2 and all(r["status"] == "ok" for r in again)
    firsts = {r["job_key"]: r for r in rows if r["submission"] == "ray-store"}
    for row in again:
        assert row["score"] == firsts[row["job_key"]]["score"]
        assert row["weights_hash"] == firsts[row["job_key"]]["weights_hash"]
    assert _checked_weights(ray_home / "weights") == stored


def _one_error(res) -> str:
    """A CLI run that exited 2 with exactly one error line on stderr: that line."""
    errors = [line for line in res.stderr.splitlines() if line.startswith("error")]
    assert res.returncode == 2 and len(errors) == 1, res.stderr
    return errors[0]


def test_unreachable_ray_address_is_one_line_within_seconds(write_submission, tmp_path):
    import socket

    with socket.socket() as s:  # a port on 127.0.0.1 that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write_submission(tiny_submission("ray-nowhere"))
    t0 = time.monotonic()
    res = run_cli(
        "score",
        str(path),
        "--device",
        "cpu",
        "--executor",
        "ray",
        "--ray-address",
        f"127.0.0.1:{port}",
        env=LOOPBACK,
    )
    assert time.monotonic() - t0 < 60
    assert _one_error(res) == (
        f"error: --ray-address: no Ray cluster reachable at 127.0.0.1:{port} (Connection refused)"
    )
    with socket.socket() as s:  # a port that accepts connections but is no Ray head
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        t0 = time.monotonic()
        res = run_cli(
            "score",
            str(path),
            "--device",
            "cpu",
            "--executor",
            "ray",
            "--ray-address",
            f"127.0.0.1:{port}",
            "--ray-timeout",
            "3",
            env=LOOPBACK,
        )
        assert time.monotonic() - t0 < 60
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert res.returncode == 2, res.stderr
    assert errors == [
        f"error: --ray-address: no answer from a Ray cluster at 127.0.0.1:{port} within 3 s"
    ], res.stderr
    bad = run_cli(
        "score",
        str(path),
        "--device",
        "cpu",
        "--executor",
        "ray",
        "--ray-address",
        "nowhere",
        env=LOOPBACK,
    )
    assert bad.returncode == 2
    assert "error: --ray-address: expected HOST:PORT or ray://HOST:PORT" in bad.stderr


@pytest.mark.slow
def test_cuda_with_ray_is_checked_against_the_cluster(ray_cluster, tmp_path, write_submission):
    """``--device cuda`` with Ray asks the cluster, not the driver (which may have no GPU): on
    this GPU-less cluster it is one line naming the cluster, exit 2, nothing stored."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the test needs a GPU-less cluster")
    path = write_submission(tiny_submission("ray-cuda"))
    home = tmp_path / "home"
    res = run_cli(
        "score",
        str(path),
        "--device",
        "cuda",
        "--executor",
        "ray",
        "--ray-address",
        ray_cluster["address"],
        env={**ray_cluster["env"], "BIOPRIOR_HOME": str(home)},
    )
    assert _one_error(res) == "error: --device: cuda: the Ray cluster has no GPU (use auto or cpu)"
    assert not any(home.glob("weights/*.safetensors"))


@pytest.mark.slow
def test_a_ray_tasks_notices_reach_the_console(ray_cluster, tmp_path, write_submission):
    """A Ray task that finds its cached weights unreadable says so on the driver's console
    (carried with its outcome), and retrains them."""
    path = write_submission(tiny_submission("ray-notices"))
    env = {**ray_cluster["env"], "BIOPRIOR_HOME": str(tmp_path / "home")}
    args = ("score", str(path), "--device", "cpu", "--executor", "ray")
    args += ("--ray-address", ray_cluster["address"])
    assert run_cli(*args, env=env).returncode == 0
    files = sorted((tmp_path / "home" / "weights").glob("*.safetensors"))
    assert len(files) == 2
    for f in files:
        f.write_bytes(b"garbage")
    with ResultStore(tmp_path / "home" / "results.sqlite") as store:
        store.conn.execute("DELETE FROM results")
    again = run_cli(*args, env=env)
    assert again.returncode == 0, again.stderr
    noticed = [ln for ln in again.stdout.splitlines() if "unreadable cached weights" in ln]
    assert len(noticed) == 2 and all(any(f.name in ln for ln in noticed) for f in files)
