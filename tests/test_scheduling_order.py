"""A finished training is evaluated before the next training starts, so a long sweep reports
its results as it goes and a stopped run leaves every finished training scored."""

from __future__ import annotations

from conftest import run_cli, tiny_submission


def test_each_seed_is_scored_before_the_next_seed_trains(tmp_path, write_submission):
    path = write_submission(tiny_submission("order", seeds=[0, 1, 2]))
    out = run_cli("score", str(path), "--workers", "1", env={"BIOPRIOR_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    log = out.stdout + out.stderr
    for seed in (0, 1):
        scored = log.index(f"done order seed={seed} memorization")
        next_training = log.index(f"on digits (seed {seed + 1}): 2 epochs")
        assert scored < next_training, log


def test_a_cached_training_is_scored_before_new_trainings_start(tmp_path, write_submission):
    env = {"BIOPRIOR_HOME": str(tmp_path)}
    first = write_submission(tiny_submission("first", seeds=[2]))
    assert run_cli("score", str(first), "--workers", "1", env=env).returncode == 0
    later = write_submission(tiny_submission("later", seeds=[0, 1, 2]))
    out = run_cli("score", str(later), "--workers", "1", env=env)
    assert out.returncode == 0, out.stderr
    log = out.stdout + out.stderr
    assert "2 cached" in log, log  # seed 2's two trainings: natural and random labels
    assert log.index("done later seed=2 memorization") < log.index("(seed 0): 2 epochs"), log


def test_trainings_go_seed_by_seed_across_the_variants(tmp_path, write_submission):
    """A sweep stopped early has every variant on its first seeds, not one variant on all."""
    sub = tiny_submission("breadth", seeds=[0, 1], sweep={"constraints.0.params.sigma": [0.0, 0.5]})
    out = run_cli(
        "score", str(write_submission(sub)), "--dry-run", env={"BIOPRIOR_HOME": str(tmp_path)}
    )
    assert out.returncode == 0, out.stderr
    trained = [
        (line.split("sigma=")[1].split(",")[0], line.split("(seed ")[1][0])
        for line in out.stdout.splitlines()
        if line.lstrip().startswith("train ") and "on digits" in line
    ]
    assert trained == [("0.0", "0"), ("0.5", "0"), ("0.0", "1"), ("0.5", "1")], out.stdout


def test_trainings_in_worker_processes_report_their_epochs(tmp_path, write_submission):
    path = write_submission(tiny_submission("epochs", seeds=[0, 1]))
    out = run_cli(
        "score", str(path), "--workers", "2", "--threads", "2", env={"BIOPRIOR_HOME": str(tmp_path)}
    )
    assert out.returncode == 0, out.stderr
    for seed in (0, 1):
        assert any(
            line.lstrip().startswith("epoch 2/2 loss") and f"on digits (seed {seed})" in line
            for line in out.stdout.splitlines()
        ), out.stdout
