"""``python -m bioprior.perf`` prints each pair's ratio from pytest-benchmark's JSON, with the
fraction of the device's matmul rate the engine and the reference reach where it was measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


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
    assert "ceiling" not in lines["eval-harness"] and "ceiling" not in lines["resnet18-cifar-epoch"]


def _save(path, *benchmarks):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"datetime": "2026-12-01T18:00:00", "benchmarks": list(benchmarks)}))


def _perf(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "bioprior.perf", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_ceiling_is_the_ratio_the_engine_would_reach_at_the_devices_peak(tmp_path):
    """A reference of 1.0 s against an engine of 0.5 s at 25% of the peak: the pair's FLOPs take
    0.125 s at the peak, so no engine can be more than 8x the reference there."""
    saved = tmp_path / "run.json"
    _save(
        saved,
        _bench("batched-small_alexnet-K8", "engine", 0.5, fp32_peak_fraction=0.25),
        _bench("batched-small_alexnet-K8", "reference", 1.0, fp32_peak_fraction=0.125),
    )
    out = _perf(saved, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "2.00x" in out.stdout and "ceiling 8.0x" in out.stdout


def test_a_folder_is_read_by_its_newest_run(tmp_path):
    import os

    old, new = tmp_path / "runs" / "m" / "0001_a.json", tmp_path / "runs" / "m" / "0002_b.json"
    _save(old, _bench("evaluation", "engine", 1.0), _bench("evaluation", "reference", 1.0))
    _save(new, _bench("evaluation", "engine", 0.5), _bench("evaluation", "reference", 1.0))
    os.utime(old, (1, 1))
    out = _perf(tmp_path / "runs", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "0002_b.json" in out.stdout and "2.00x" in out.stdout


def test_a_path_that_is_not_a_benchmark_run_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "empty").mkdir()
    cases = {
        tmp_path / "missing.json": "no such file",
        tmp_path / "broken.json": "not JSON",
        tmp_path / "list.json": "benchmarks: missing",
        tmp_path / "empty": "no pytest-benchmark JSON",
    }
    for path, why in cases.items():
        out = _perf(path, cwd=tmp_path)
        assert out.returncode == 2 and out.stdout == ""
        assert out.stderr.count("\n") == 1 and str(path) in out.stderr and why in out.stderr
    out = _perf("--no-such-option", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--no-such-option" in out.stderr
    out = _perf(cwd=tmp_path)  # no .benchmarks here
    assert out.returncode == 2 and ".benchmarks" in out.stderr


def test_the_interleaved_ratio_comes_from_the_reference_timed_between_the_engines_rounds(tmp_path):
    """The reference's own test ran while the machine was slow (2.0 s); timed between the
    engine's rounds it took 0.75 s on average: 1.50x in the same minutes, 4.00x one after the
    other."""
    saved = tmp_path / "run.json"
    _save(
        saved,
        _bench("train-epoch", "engine", 0.5, interleaved_reference_s=[0.7, 0.8, 0.75]),
        _bench("train-epoch", "reference", 2.0),
        _bench("evaluation", "engine", 0.5),
        _bench("evaluation", "reference", 1.0),
    )
    out = _perf(saved, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    assert "4.00x (interleaved 1.50x)" in lines["train-epoch"]
    assert "2.00x" in lines["evaluation"] and "interleaved" not in lines["evaluation"]


def test_interleave_times_the_reference_before_each_round_of_the_engine(tmp_path):
    """``perfkit.interleave`` under pytest-benchmark: the sides alternate (a reference run, then
    an engine round, warm-up included) and the reference's timed runs land in extra_info."""
    test = tmp_path / "test_interleave.py"
    test.write_text(
        "import json, time\n"
        "from perfkit import interleave\n"
        "calls = []\n"
        "def test_pair(benchmark, tmp_path):\n"
        "    ref = lambda: (calls.append('r'), time.sleep(0.02))\n"
        "    eng = lambda: calls.append('e')\n"
        "    interleave(benchmark, eng, ref, rounds=3)\n"
        "    assert calls == ['r', 'e'] * 4\n"
        "    times = benchmark.extra_info['interleaved_reference_s']\n"
        "    assert len(times) == 3 and all(t >= 0.02 for t in times)\n"
    )
    perf = Path(__file__).parent / "perf"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(test),
            "-q",
            "-p",
            "no:cacheprovider",
            "--benchmark-enable",
            "-o",
            "addopts=",
            f"--rootdir={tmp_path}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": f"{perf}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
