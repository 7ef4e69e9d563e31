"""The corruption benchmark on real digits, on CPU: severity ordering, identity = clean,
cached stimulus sets reused by another model, parallel = serial generation, mCE definitions,
precomputed CIFAR-10-C style folders."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_submission

import bioprior
from bioprior.benchmarks.corruption.run import TRANSFORM
from bioprior.benchmarks.stimuli import Condition, StimulusSet

FEW = {
    "corruptions": ["identity", "gaussian_noise", "contrast"],
    "severities": [1, 5],
    "noise_sweeps": [],
    "max_images": 150,
    "preset": "imagenet_c",  # strong enough on 8 px digits for severity 5 to be harder than 1
}


SECOND = {"name": "small_alexnet", "params": {"width": 0.15, "input_size": 8}}


def learner(name: str, width: float = 0.1, params: dict | None = None, **over) -> dict:
    """A small AlexNet that learns digits in a few seconds (8 px input: upsampled to 32 px for
    imagecorruptions)."""
    sub = tiny_submission(
        name,
        model={"name": "small_alexnet", "params": {"width": width, "input_size": 8}},
        constraints=[],
        training={
            "dataset": "digits",
            "epochs": 3,
            "batch_size": 32,
            "lr": 0.02,
            "optimizer": "sgd",
            "momentum": 0.9,
        },
        benchmarks=[{"name": "corruption", "params": {**FEW, **(params or {})}}],
    )
    sub.update(over)
    return sub


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Two models scored one after the other in one BIOPRIOR_HOME."""
    home = tmp_path_factory.mktemp("corruption-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOPRIOR_HOME", str(home))
        # the first model's baseline is the second model (mCE against a different model)
        (first,) = bioprior.score(
            learner("first", params={"baseline": {"model": SECOND}}), device="cpu"
        )
        files = sorted((home / "stimuli").glob("*.npy"))
        mtimes = [f.stat().st_mtime_ns for f in files]
        (second,) = bioprior.score(learner("second", width=0.15), device="cpu")
        after = sorted((home / "stimuli").glob("*.npy"))
    return first, second, files, mtimes, after, home


def test_severity_5_is_harder_than_1_and_identity_equals_clean(scored):
    first = scored[0]
    assert first["status"] == "ok", first["error"]
    m = first["metrics"]
    assert m["clean_acc"] >= 0.8  # the model learned digits
    for name in ("gaussian_noise", "contrast"):
        assert m["accuracy"][name]["5"] < m["accuracy"][name]["1"], name
    assert m["accuracy"]["identity"]["0"] == m["clean_acc"]
    assert m["upsampled_to"] == 32 and "upsampled" in m["note"]
    assert "upsampling_round_trip" in m["accuracy"]
    assert first["score"] == pytest.approx(m["mean_corruption_acc"] / m["clean_acc"])
    # the second model's baseline (own model, no constraints) is itself: mCE = robustness = 1
    m2 = scored[1]["metrics"]
    assert m2["mce"] == pytest.approx(1.0) and m2["robustness_score"] == pytest.approx(1.0)


def test_another_model_reuses_the_cached_stimulus_sets(scored):
    first, second, files, mtimes, after, _ = scored
    assert second["status"] == "ok", second["error"]
    assert first["metrics"]["stimuli"]["generated"] == len(files) == 6
    assert second["metrics"]["stimuli"]["generated"] == 0
    assert second["metrics"]["stimuli"]["reused"] >= 6
    assert after == files and [f.stat().st_mtime_ns for f in after] == mtimes
    assert second["metrics"]["accuracy"] == first["metrics"]["baseline"]["accuracy"]


def test_results_list_every_condition(scored, tmp_path):
    m = scored[0]["metrics"]
    assert set(m["accuracy"]) == {"identity", "gaussian_noise", "contrast", "upsampling_round_trip"}
    assert set(m["accuracy"]["contrast"]) == {"1", "5"}
    assert set(m["corruption_acc"]) == {"gaussian_noise", "contrast"}


def test_parallel_generation_equals_serial(tmp_path):
    rng = np.random.default_rng(0)
    src = np.uint8(rng.integers(0, 256, size=(24, 1, 16, 16)))
    conds = [
        Condition("imagecorruptions", "glass_blur", 2, (("preset", "imagenet_c"),)),
        Condition("imagecorruptions", "impulse_noise", 5, (("preset", "imagenet_c"),)),
        Condition("noise", "salt_and_pepper", 0.3, (("contrast", 0.3),)),
    ]
    serial = StimulusSet(src, conds, TRANSFORM, seed=3, workers=1, cache_dir=tmp_path / "a")
    parallel = StimulusSet(src, conds, TRANSFORM, seed=3, workers=2, cache_dir=tmp_path / "b")
    serial.ensure(), parallel.ensure()
    for c in conds:
        assert np.array_equal(serial[c], parallel[c]), c.label
        assert not np.array_equal(serial[c], src)
    other = StimulusSet(src, conds[1:], TRANSFORM, seed=4, workers=1, cache_dir=tmp_path / "a")
    assert not np.array_equal(other.ensure()[conds[1]], serial[conds[1]])  # the seed matters
    assert serial.ensure().stats == {"generated": 3, "reused": 3}


def _generate_in_a_daemonic_process(src, conds, cache_dir, conn) -> None:
    try:
        stimuli = StimulusSet(src, conds, TRANSFORM, seed=3, workers=2, cache_dir=cache_dir)
        conn.send(("ok", [stimuli.ensure()[c] for c in conds]))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        conn.send(("error", repr(exc)))


def test_a_scorer_worker_generates_serially_what_a_pool_would(tmp_path):
    """A daemonic process (one of the scorer's CPU workers) may not start a process pool: it
    generates serially, the same images."""
    import multiprocessing

    rng = np.random.default_rng(0)
    src = np.uint8(rng.integers(0, 256, size=(24, 1, 16, 16)))
    conds = [Condition("imagecorruptions", "impulse_noise", 5, (("preset", "imagenet_c"),))]
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    worker = ctx.Process(
        target=_generate_in_a_daemonic_process,
        args=(src, conds, tmp_path / "w", child),
        daemon=True,
    )
    worker.start()
    assert parent.poll(120), "the worker sent nothing"
    status, got = parent.recv()
    worker.join(60)
    assert status == "ok", got  # was: daemonic processes are not allowed to have children
    pool = StimulusSet(src, conds, TRANSFORM, seed=3, workers=2, cache_dir=tmp_path / "p")
    assert np.array_equal(got[0], pool.ensure()[conds[0]])


def slow_transform(images, condition, seed, start):
    """The corruption transform, a quarter of a second slower (and noting who ran it)."""
    import os
    import time
    from pathlib import Path

    time.sleep(0.25)
    log = Path(os.environ["STIMULI_TEST_LOG"])
    with log.open("a") as fh:
        fh.write(f"{os.getpid()} {condition.label}\n")
    return bioprior.benchmarks.corruption.run.transform(images, condition, seed, start)


def _ensure_in_a_worker(src, conds, cache_dir, conn) -> None:
    try:
        stimuli = StimulusSet(src, conds, f"{__name__}:slow_transform", 3, cache_dir=cache_dir)
        conn.send(("ok", stimuli.ensure().stats, [stimuli[c].copy() for c in conds]))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        conn.send(("error", repr(exc), None))


def test_two_workers_needing_one_set_split_its_conditions(tmp_path, monkeypatch):
    """Two of the scorer's CPU workers evaluating two models of one seed at once generate each
    condition once between them (each about half), and both read all of them: the images a
    single process generates."""
    import multiprocessing

    import bioprior.benchmarks.corruption.run  # noqa: F401 - slow_transform calls it

    monkeypatch.setenv("STIMULI_TEST_LOG", str(tmp_path / "log"))
    rng = np.random.default_rng(0)
    src = np.uint8(rng.integers(0, 256, size=(12, 1, 16, 16)))
    conds = [
        Condition("imagecorruptions", name, level, (("preset", "imagenet_c"),))
        for name in ("impulse_noise", "contrast", "glass_blur")
        for level in (1, 3, 5)
    ]
    ctx = multiprocessing.get_context("fork")
    pipes, workers = [], []
    for _ in range(2):
        parent, child = ctx.Pipe()
        worker = ctx.Process(
            target=_ensure_in_a_worker, args=(src, conds, tmp_path / "cache", child), daemon=True
        )
        pipes.append(parent)
        workers.append(worker)
    for w in workers:
        w.start()
    got = []
    for parent in pipes:
        assert parent.poll(120), "a worker sent nothing"
        got.append(parent.recv())
    for w in workers:
        w.join(60)
    assert [g[0] for g in got] == ["ok", "ok"], got
    lines = (tmp_path / "log").read_text().splitlines()
    assert sorted(line.split(" ", 1)[1] for line in lines) == sorted(c.label for c in conds)
    by_pid = {
        pid: sum(line.startswith(f"{pid} ") for line in lines)
        for pid in {line.split()[0] for line in lines}
    }
    assert len(by_pid) == 2 and min(by_pid.values()) >= 2, by_pid  # both did a share
    assert sum(g[1]["generated"] for g in got) == len(conds)
    alone = StimulusSet(src, conds, TRANSFORM, 3, workers=1, cache_dir=tmp_path / "alone")
    alone.ensure()
    for _, _, images in got:
        for c, a in zip(conds, images, strict=True):
            assert np.array_equal(a, alone[c]), c.label


def test_image_transform_benchmarks_run_in_cpu_workers(tmp_path, write_submission):
    """`bioprior score --workers 2` runs corruption, spectral and ood_stylized in worker
    processes (they generated their stimuli with a process pool, which a worker may not start)."""
    from conftest import run_cli

    sub = learner("in-workers", params={"workers": 2}, seeds=[0, 1])
    sub["benchmarks"] += [
        {"name": "spectral", "params": {"max_images": 60, "heatmap_images": 4, "workers": 2}},
        {"name": "ood_stylized", "params": {"max_images": 60, "workers": 2}},
    ]
    env = {"BIOPRIOR_HOME": str(tmp_path / "home")}
    path = write_submission(sub)
    done = run_cli("score", str(path), "--threads", "2", "--workers", "2", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "daemonic" not in done.stdout + done.stderr
    assert len(list((tmp_path / "home" / "stimuli").rglob("*.npy"))) > 0
    # what the plan counts as cached is what the runs generated: every family, every seed
    import torch

    from bioprior.registry.engine.service import TrainingService
    from bioprior.registry.hooks.loading import get_registry
    from bioprior.registry.planning.declare import build_benchmark
    from bioprior.registry.planning.jobs import plan
    from bioprior.registry.submissions.loading import validate_submission_dict

    jobs = plan([validate_submission_dict(sub, get_registry())])
    service = TrainingService(tmp_path / "home", torch.device("cpu"))
    shares = {}
    with pytest.MonkeyPatch.context() as mp:
        for home in ("elsewhere", "home"):
            mp.setenv("BIOPRIOR_HOME", str(tmp_path / home))
            for job in jobs:
                data = service.data(job.training)
                share = build_benchmark(job).stimuli_cached(data, job.seed)
                shares[home, job.benchmark.entry.name, job.seed] = share
    assert {k[1] for k in shares} == {"corruption", "spectral", "ood_stylized"}
    assert all(v == (1.0 if k[0] == "home" else 0.0) for k, v in shares.items()), shares


def test_mce_against_a_different_baseline(scored):
    m = scored[0]["metrics"]
    assert m["baseline"]["model"]["params"]["width"] == 0.15
    for name in ("gaussian_noise", "contrast"):
        own, base = m["accuracy"][name], m["baseline"]["accuracy"][name]
        ce = sum(1 - own[s] for s in own) / sum(1 - base[s] for s in base)
        assert m["ce"][name] == pytest.approx(ce)
        ratio = (sum(own.values()) / 2) / (sum(base.values()) / 2)
        assert m["robustness"][name] == pytest.approx(ratio)
    assert m["mce"] == pytest.approx(np.mean(list(m["ce"].values())))
    assert m["robustness_score"] == pytest.approx(np.mean(list(m["robustness"].values())))
    assert m["robustness_score"] != pytest.approx(1.0)


def test_precomputed_cifar10c_style_folder(scored, tmp_path, monkeypatch):
    """The benchmark's own cached stimuli, written as a CIFAR-10-C style folder, give the same
    accuracies; a missing corruption file says where to get the data."""
    from bioprior.benchmarks.corruption import run as impl
    from bioprior.registry.hooks.loading import get_registry
    from bioprior.registry.toolkit.data import fit_images

    first, home = scored[0], scored[5]
    monkeypatch.setenv("BIOPRIOR_HOME", str(home))
    data = get_registry().get("dataset", "digits").build({})
    idx = impl.subset_indices(len(data.test_x), 150, 0)
    src = impl.to_uint8(fit_images(data.test_x, 1, 8)[idx])
    conds = [
        Condition("imagecorruptions", "contrast", s, (("preset", "imagenet_c"),)) for s in (1, 5)
    ]
    stim = StimulusSet(src, conds, TRANSFORM, seed=0, version=impl.VERSION).ensure()
    assert stim.generated == 0  # the benchmark cached exactly these
    rgb = [np.repeat(stim[c].transpose(0, 2, 3, 1), 3, axis=3) for c in conds]
    folder = tmp_path / "c10c"
    folder.mkdir()
    # severities 2-4 are not evaluated; filled so the layout is CIFAR-10-C's (5 blocks)
    np.save(folder / "contrast.npy", np.concatenate([rgb[0]] * 4 + [rgb[1]]))
    np.save(folder / "labels.npy", np.tile(data.test_y[idx].numpy(), 5))
    params = {**FEW, "corruptions": ["contrast"], "precomputed": str(folder), "baseline": None}
    (pre,) = bioprior.score(learner("pre", params=params), device="cpu")
    assert pre["status"] == "ok", pre["error"]
    assert pre["metrics"]["accuracy"]["contrast"] == first["metrics"]["accuracy"]["contrast"]

    params["corruptions"] = ["fog"]
    (missing,) = bioprior.score(learner("missing", params=params), device="cpu")
    assert missing["status"] != "ok" and "CIFAR-10-C" in missing["error"]
