"""A neural data file that is missing or malformed is bad input: exit 2 before any training."""

from __future__ import annotations

import numpy as np
from conftest import run_cli, tiny_submission


def cotraining_submission(path: str) -> dict:
    return tiny_submission(
        "cotrain-file",
        constraints=[
            {
                "name": "neural_cotraining",
                "params": {
                    "layer": "conv:1",
                    "data": {"name": "neural_file", "params": {"path": path}},
                },
            }
        ],
    )


def test_missing_neural_file_exits_2_naming_the_field(bioprior_home, write_submission, tmp_path):
    missing = tmp_path / "recordings.npz"
    sub = write_submission(cotraining_submission(str(missing)))
    db = bioprior_home / "r.sqlite"
    out = run_cli("score", str(sub), "--db", str(db))
    assert out.returncode == 2, out.stdout + out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert "constraints.neural_cotraining.params.data" in line and "recordings.npz" in line
    assert not (bioprior_home / "weights").exists()  # nothing trained


def test_malformed_neural_file_exits_2(bioprior_home, write_submission, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, stimuli=np.zeros((4, 8, 8), np.uint8))  # neither responses nor similarity
    out = run_cli(
        "score",
        str(write_submission(cotraining_submission(str(bad)))),
        "--db",
        str(bioprior_home / "r.sqlite"),
    )
    assert out.returncode == 2 and "bad.npz" in out.stderr and "responses" in out.stderr
