"""``python -m bioprior.perf`` prints each pair's ratio from pytest-benchmark's JSON, with the
fraction of the device's matmul rate the engine and the reference reach where it was measured."""

from __future__ import annotations

import json
import subprocess
import sys


def _bench(pair, role, mean, **info):
    return {"stats": {"mean": mean}, "extra_info": {"pair": pair, "role": role, **info}}


def test_the_report_gives_each_pairs_ratio_and_how_near_the_matmul_peak_it_runs(tmp_path):
    saved = tmp_path / ".benchmarks" / "Linux-CPython" / "0001_run.json"
    saved.parent.mkdir(parents=True)
    cpu = "cpu (x86_64, 2 threads)"
    saved.write_text(
        json.dumps(
            {
                "datetime": "2026-12-01T18:00:00",
                "benchmarks": [
                    _bench(
                        "batched-small_alexnet-K8",
                        "engine",
                        0.8,
                        device=cpu,
                        images_per_s=17970.0,
                        fp32_peak_fraction=0.26,
                    ),
                    _bench(
                        "batched-small_alexnet-K8",
                        "reference",
                        0.78,
                        device=cpu,
                        fp32_peak_fraction=0.27,
                    ),
                    _bench("eval-harness", "engine", 0.5, device=cpu),
                    _bench("eval-harness", "reference", 0.45, device=cpu),
                    _bench(
                        "resnet18-cifar-epoch",
                        "engine",
                        0.9,
                        device="NVIDIA H200",
                        bf16_peak_fraction=0.23,
                    ),
                ],
            }
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "bioprior.perf"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "0.97x" in lines["batched-small_alexnet-K8"]
    assert "26.0% of fp32 matmul peak (reference 27.0% of fp32 matmul peak)" in out
    assert "0.90x" in lines["eval-harness"] and "peak" not in lines["eval-harness"]
    assert "--" in lines["resnet18-cifar-epoch"]
    assert "23.0% of bf16 matmul peak" in lines["resnet18-cifar-epoch"]
