"""Training checkpoints (registry.engine.checkpoint): a training stopped at a checkpoint and
resumed from it, in a fresh model built from the same seed, ends with the weights of an
uninterrupted one, bit for bit on the CPU (solo and batched, momentum SGD, a step schedule,
augmentation from the trainer's generator, internal noise from the global RNG); a killed
`bioprior score` resumes mid-training to the uninterrupted run's weights and scores; a corrupt
or foreign checkpoint is ignored with a notice and never unpickled."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from conftest import ROOT, tiny_submission

from bioprior.registry.base import atomic, stops
from bioprior.registry.engine import checkpoint as ckpt
from bioprior.registry.engine.batched import train_batched
from bioprior.registry.engine.checkpoint import Checkpointer
from bioprior.registry.engine.service import TrainingService
from bioprior.registry.engine.trainer import train_model
from bioprior.registry.hooks.loading import get_registry
from bioprior.registry.planning.spec import TrainingSpec
from bioprior.registry.store.weights import file_metadata
from bioprior.registry.submissions.loading import resolve_component
from bioprior.registry.submissions.schema import PluginRef, TrainingRecipe


class Killed(Exception):
    """Stands for a kill right after a checkpoint was written."""


class KillAt(Checkpointer):
    """Saves once, before the step at (``epoch``, ``position``), then 'dies'."""

    def __init__(self, path, identity, epoch: int, position: int):
        super().__init__(path, identity, interval_s=None)
        self.at = (epoch, position)

    def due(self, epoch, position):
        return (epoch, position) == self.at

    def save(self, state):
        super().save(state)
        raise Killed


def _component(kind: str, name: str, params: dict):
    errors: list = []
    c = resolve_component(get_registry(), kind, PluginRef(name=name, params=params), (), errors)
    assert c is not None, errors
    return c


def _spec(
    seed=0, lr=0.05, sigma=0.3, model=("small_alexnet", {"width": 0.1, "input_size": 8}), **recipe
):
    model = _component("model", *model)
    noise = _component("constraint", "internal_noise", {"sigma": sigma}) if sigma else None
    digits = _component("dataset", "digits", {})
    subset = _component("dataset", "subset", {"examples_per_class": 20})
    data = type(subset)(subset.entry, subset.params, digits)  # 200 images: a second a training
    fields = {
        "dataset": "digits",
        "epochs": 4,
        "batch_size": 32,
        "lr": lr,
        "momentum": 0.9,
        "schedule": {"name": "step", "step_size": 2, "gamma": 0.5},
        "augment": ["hflip", "crop"],
    }
    constraints = (noise,) if noise else ()
    return TrainingSpec(model, constraints, TrainingRecipe(**{**fields, **recipe}), data, seed)


@pytest.fixture
def service(tmp_path):
    return TrainingService(tmp_path, torch.device("cpu"))


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _same_history(a: dict, b: dict) -> None:
    for key in ("loss", "accuracy", "lr"):
        assert a[key] == b[key], key
    assert b["resumed"] and "resumed" not in a


IDENTITY = {"keys": ["k"], "recipes": [], "seeds": [0], "device": "cpu"}


def _killed_then_resumed(service, spec, path, at, between=lambda: None):
    """Train ``spec`` until a checkpoint at ``at`` (epoch, position) and 'die'; run
    ``between``; train a fresh model from the checkpoint: (that model, its history, the
    notices)."""
    data = service.data(spec)
    x, y = data.train_x, data.train_y
    with pytest.raises(Killed):
        killed = service.build(spec, data)
        train_model(killed, x, y, spec.recipe, spec.seed, None, KillAt(path, IDENTITY, *at))
    assert path.exists()
    between()
    notices: list[str] = []
    resumed = service.build(spec, data)
    checkpointer = Checkpointer(path, IDENTITY, None, notices.append)
    history = train_model(resumed, x, y, spec.recipe, spec.seed, None, checkpointer)
    return resumed, history, notices


@pytest.mark.parametrize("at", [(2, 0), (1, 96)], ids=["epoch-boundary", "mid-epoch"])
def test_solo_resume_is_bit_identical(service, tmp_path, one_thread, at):
    spec = _spec()
    data = service.data(spec)
    whole = service.build(spec, data)
    h_whole = train_model(whole, data.train_x, data.train_y, spec.recipe, spec.seed)
    resumed, h_resumed, notices = _killed_then_resumed(
        service,
        spec,
        tmp_path / "solo.ckpt.safetensors",
        at,
        lambda: torch.manual_seed(1234),  # whatever ran between the two processes
    )
    assert any("resuming" in n for n in notices), notices
    assert _states_equal(whole, resumed)
    _same_history(h_whole, h_resumed)


def test_a_resume_under_other_software_says_so_and_records_it(
    service, tmp_path, one_thread, monkeypatch
):
    """A training checkpointed under one bioprior commit and thread count and resumed under
    others (a sweep that spans an upgrade): the notice says what changed, and the history kept
    with its weights records what wrote the part before the resume."""
    here = ckpt.software("cpu")
    before = {**here, "git_commit": "0" * 40, "torch_num_threads": 7}
    monkeypatch.setattr(ckpt, "software", lambda device: before)
    _, history, notices = _killed_then_resumed(
        service,
        _spec(epochs=2),
        tmp_path / "solo.ckpt.safetensors",
        (1, 0),
        lambda: monkeypatch.setattr(ckpt, "software", lambda device: here),
    )
    warning = next(n for n in notices if n.startswith("warning"))
    assert f"git_commit {'0' * 40}, torch_num_threads 7" in warning
    assert f"torch_num_threads {here['torch_num_threads']}" in warning
    assert history["resumed"] == [[1, 0]] and history["resumed_software"] == [before]


def test_a_resume_under_the_same_software_is_quiet(service, tmp_path, one_thread):
    path = tmp_path / "solo.ckpt.safetensors"
    _, history, notices = _killed_then_resumed(service, _spec(epochs=2), path, (1, 0))
    assert not any(n.startswith("warning") for n in notices), notices
    assert history["resumed_software"] == [ckpt.software("cpu")]
    assert history["resumed_software"][0]["torch"] == torch.__version__


#: Fig. 4A's flexible HMAX, small: learned thresholds (no weight decay), prototypes shared by
#: the bands' Flexible Layers, S2 band by band with maps slid over 12-unit prototypes
HMAX = (
    "hmax",
    {
        "variant": "flexible",
        "input_size": 16,
        "bands": 4,
        "patch_sizes": [2, 12],
        "num_prototypes": 6,
    },
)


def test_flexible_hmax_resumes_bit_identical(service, tmp_path, one_thread):
    spec = _spec(model=HMAX, sigma=0.0, epochs=2, augment=[], weight_decay=0.006)
    data = service.data(spec)
    whole = service.build(spec, data)
    h_whole = train_model(whole, data.train_x, data.train_y, spec.recipe, spec.seed)
    path = tmp_path / "hmax.ckpt.safetensors"
    resumed, h_resumed, _ = _killed_then_resumed(service, spec, path, (1, 96))
    assert _states_equal(whole, resumed)
    _same_history(h_whole, h_resumed)
    start = service.build(spec, data).state_dict()
    trained = whole.state_dict()
    moved = [k for k in start if "threshold" in k and not torch.equal(start[k], trained[k])]
    assert moved  # thresholds trained (and resumed with their optimizer state)


@pytest.mark.parametrize(
    ("signals", "in_scorer", "raised"),
    [
        ([signal.SIGINT], False, KeyboardInterrupt),
        ([signal.SIGTERM, signal.SIGTERM], True, stops.Stopped),
    ],
    ids=["ctrl-c", "sigterm-twice-in-a-scorer"],
)
def test_a_stop_checkpoints_at_the_next_step_then_stops(
    service, tmp_path, one_thread, signals, in_scorer, raised, request
):
    """The first SIGINT during training, or SIGTERM inside a scorer (which raises ``Stopped``),
    even twice, as a stop sent to a process group reaches a worker (from the sender, then from
    its scorer): the step in progress ends, a checkpoint is written, then the stop is raised;
    the handlers are restored; the rerun resumes to the uninterrupted weights."""
    # as in a terminal: a job started in the background by a shell inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    spec = _spec()
    data = service.data(spec)
    x, y = data.train_x, data.train_y
    whole = service.build(spec, data)
    train_model(whole, x, y, spec.recipe, spec.seed)

    def interrupt(epoch, stats):
        if epoch == 1:
            for signum in signals:
                os.kill(os.getpid(), signum)

    path = tmp_path / "solo.ckpt.safetensors"
    stopped = Checkpointer(path, IDENTITY, None)  # no interval: only the stop writes one
    with stops.stoppable() if in_scorer else nullcontext(), pytest.raises(raised):
        train_model(service.build(spec, data), x, y, spec.recipe, spec.seed, interrupt, stopped)
    assert stopped.saves == 1 and path.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    resumed = service.build(spec, data)
    checkpoint = Checkpointer(path, IDENTITY, None)
    train_model(resumed, x, y, spec.recipe, spec.seed, None, checkpoint)
    assert checkpoint.resumed_at == (2, 0)
    assert _states_equal(whole, resumed)


@pytest.mark.parametrize("hyper", ["per-member", "shared"])
def test_batched_resume_is_bit_identical(service, tmp_path, one_thread, hyper):
    if hyper == "shared":  # one momentum, decay and lr (the fused SGD path on CUDA)
        specs = [_spec(seed=0), _spec(seed=1), _spec(seed=2)]
    else:
        specs = [_spec(seed=0), _spec(seed=1, lr=0.02), _spec(seed=2, momentum=0.5)]
    datas = [service.data(s) for s in specs]

    def run(checkpoint=None):
        modules = [service.build(s, d) for s, d in zip(specs, datas)]
        histories = train_batched(
            modules,
            [d.train_x for d in datas],
            [d.train_y for d in datas],
            [s.recipe for s in specs],
            [s.seed for s in specs],
            None,
            checkpoint,
        )
        return modules, histories

    whole, h_whole = run()
    path = tmp_path / "batch.ckpt.safetensors"
    identity = {**IDENTITY, "keys": ["a", "b", "c"]}
    with pytest.raises(Killed):
        run(KillAt(path, identity, 1, 64))
    notices: list[str] = []
    resumed, h_resumed = run(Checkpointer(path, identity, None, notices.append))
    assert any("resuming" in n for n in notices), notices
    for a, b, ha, hb in zip(whole, resumed, h_whole, h_resumed):
        assert _states_equal(a, b)
        _same_history(ha, hb)


def _with_objective(registry, which: str) -> torch.nn.Module:
    """A small net with a training objective (its own generator, running state), built seeded."""
    from bioprior.registry.contracts.constraint import InputGeometry
    from bioprior.registry.engine.trainer import Normalized

    torch.manual_seed(0)
    data = {"name": "synthetic_v1", "params": {"num_stimuli": 40, "num_neurons": 8, "size": 16}}
    net = registry.get("model", "small_alexnet").build(
        {"width": 0.1, "in_channels": 1, "num_classes": 4, "input_size": 16}
    )
    params = {"data": data, "layers": [1]} if which == "neural_similarity" else {"data": data}
    if which == "neural_cotraining":
        params["layer"] = "conv:2"
    if which == "neural_similarity":
        params["alpha"] = 1.0
    net = registry.get("constraint", which).build(params).apply(net, InputGeometry(1, 16))
    return Normalized(net, torch.tensor([0.5]), torch.tensor([0.25]))


@pytest.mark.parametrize("which", ["neural_similarity", "neural_cotraining"])
def test_objectives_resume_bit_identical(registry, tmp_path, one_thread, which):
    x = torch.rand(96, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 4, (96,), generator=torch.Generator().manual_seed(1))
    recipe = TrainingRecipe(dataset="digits", epochs=3, batch_size=16, optimizer="adam", lr=3e-3)
    whole = _with_objective(registry, which)
    h_whole = train_model(whole, x, y, recipe, 0)
    path = tmp_path / "objective.ckpt.safetensors"
    with pytest.raises(Killed):
        train_model(
            _with_objective(registry, which), x, y, recipe, 0, None, KillAt(path, IDENTITY, 1, 48)
        )
    resumed = _with_objective(registry, which)
    h_resumed = train_model(resumed, x, y, recipe, 0, None, Checkpointer(path, IDENTITY, None))
    assert _states_equal(whole, resumed)
    _same_history(h_whole, h_resumed)
    metrics = [k for k in h_whole if k.startswith(("similarity_", "neural_"))]
    assert metrics and all(h_whole[k] == h_resumed[k] for k in metrics)


def test_an_objective_without_training_state_is_not_checkpointed(tmp_path):
    from bioprior.registry.engine.trainer import Normalized
    from bioprior.registry.toolkit.objective import TrainingObjective, attach_objective

    class Counting(TrainingObjective):  # state of its own, and no training_state()
        def __init__(self):
            super().__init__()
            self.steps = 0

        def total_loss(self, model, task_loss, batch):
            self.steps += 1
            return task_loss

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    model = Normalized(attach_objective(net, Counting()), torch.zeros(1), torch.ones(1))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 2, (8,))
    recipe = TrainingRecipe(dataset="digits", epochs=2, batch_size=4)
    notices: list[str] = []
    path = tmp_path / "c.ckpt.safetensors"
    train_model(model, x, y, recipe, 0, None, Checkpointer(path, IDENTITY, 1e-9, notices.append))
    assert not path.exists()
    assert any("not checkpointed" in n and "Counting" in n for n in notices), notices


def test_a_batch_of_other_members_starts_over(service, tmp_path, one_thread):
    spec = _spec(epochs=1)
    data = service.data(spec)
    path = tmp_path / "batch.ckpt.safetensors"
    identity = {**IDENTITY, "keys": ["a", "b"]}
    with pytest.raises(Killed):
        train_model(
            service.build(spec, data),
            data.train_x,
            data.train_y,
            spec.recipe,
            0,
            None,
            KillAt(path, identity, 0, 64),
        )
    notices: list[str] = []
    other = Checkpointer(path, {**IDENTITY, "keys": ["a", "c"]}, None, notices.append)
    assert other.resume() is None
    assert any("another training" in n and "keys" in n for n in notices), notices


def test_a_checkpoint_of_another_model_is_not_applied(service, tmp_path):
    """Same recorded identity, other tensors (a plugin changed without a new version): checked
    before anything is applied, ignored with a notice."""
    spec = _spec(epochs=1, sigma=0.0)
    data = service.data(spec)
    path = tmp_path / "solo.ckpt.safetensors"
    wide = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(Killed):
        train_model(
            wide,
            data.train_x.float(),
            data.train_y,
            spec.recipe,
            0,
            None,
            KillAt(path, IDENTITY, 0, 64),
        )
    notices: list[str] = []
    model = service.build(spec, data)
    history = train_model(
        model,
        data.train_x,
        data.train_y,
        spec.recipe,
        0,
        None,
        Checkpointer(path, IDENTITY, None, notices.append),
    )
    assert "resumed" not in history
    assert any("not this training's" in n for n in notices), notices


def _corrupt_flip(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF  # a byte of the last tensor
    path.write_bytes(bytes(blob))


def _pickle_file(path: Path) -> None:
    torch.save({"model": torch.zeros(3)}, path)  # what must never be loaded


def _foreign_metadata(path: Path) -> None:
    """A valid safetensors file whose recorded state was edited (the hash no longer matches)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as fh:
        meta = dict(fh.metadata())
    meta[ckpt.STATE_KEY] = meta[ckpt.STATE_KEY].replace('"epoch": 0', '"epoch": 3')
    save_file(load_file(str(path)), str(path), metadata=meta)


@pytest.mark.parametrize("damage", [_corrupt_flip, _pickle_file, _foreign_metadata])
def test_a_damaged_checkpoint_is_ignored_never_unpickled(service, tmp_path, monkeypatch, damage):
    spec = _spec(epochs=1, sigma=0.0)
    data = service.data(spec)
    path = tmp_path / "solo.ckpt.safetensors"
    with pytest.raises(Killed):
        train_model(
            service.build(spec, data),
            data.train_x,
            data.train_y,
            spec.recipe,
            0,
            None,
            KillAt(path, IDENTITY, 0, 64),
        )
    assert Checkpointer(path, IDENTITY).progress() == (0, 64)  # what a plan's estimate reads
    assert Checkpointer(path, {**IDENTITY, "seeds": [9]}).progress() is None
    damage(path)
    # the plan reads the metadata alone: a damaged tensor shows only when the training resumes
    expected = (0, 64) if damage is _corrupt_flip else None
    assert Checkpointer(path, IDENTITY).progress() == expected

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "Unpickler", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    notices: list[str] = []
    fresh = service.build(spec, data)
    history = train_model(
        fresh,
        data.train_x,
        data.train_y,
        spec.recipe,
        0,
        None,
        Checkpointer(path, IDENTITY, None, notices.append),
    )
    assert any(
        "ignoring the checkpoint" in n and "training from the start" in n for n in notices
    ), notices
    assert "resumed" not in history
    monkeypatch.undo()
    clean = service.build(spec, data)
    train_model(clean, data.train_x, data.train_y, spec.recipe, 0)
    assert _states_equal(clean, fresh)  # started over: an uninterrupted training's weights


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv(ckpt.INTERVAL_ENV, raising=False)
    assert ckpt.interval_from_env() == ckpt.DEFAULT_INTERVAL_S
    for value, expected in (("2.5", 2.5), ("0", None), ("off", None)):
        monkeypatch.setenv(ckpt.INTERVAL_ENV, value)
        assert ckpt.interval_from_env() == expected
    assert not Checkpointer.from_env("x.ckpt.safetensors", {}).enabled  # off: none at all
    monkeypatch.setenv(ckpt.INTERVAL_ENV, "soon")
    with pytest.raises(ValueError, match=ckpt.INTERVAL_ENV):
        ckpt.interval_from_env()


def test_pack_round_trips_nested_state():
    state = {
        "optimizer": {
            "state": {0: {"momentum_buffer": torch.arange(3.0)}},
            "groups": [{"betas": (0.9, 0.999), "fused": None}],
        },
        "rng": torch.get_rng_state(),
        "$odd": 1,
        "nan": float("inf"),
    }
    tensors: dict = {}
    packed = ckpt.pack(state, "s", tensors)
    back = ckpt.unpack(json.loads(json.dumps(packed)), tensors)
    assert back["optimizer"]["groups"][0]["betas"] == (0.9, 0.999)
    assert torch.equal(back["optimizer"]["state"][0]["momentum_buffer"], torch.arange(3.0))
    assert torch.equal(back["rng"], state["rng"]) and back["$odd"] == 1


# -- end to end, as a user -----------------------------------------------------------------------
def _score(home: Path, path: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "BIOPRIOR_HOME": str(home), ckpt.INTERVAL_ENV: "0.5"}
    cmd = [sys.executable, "-m", "bioprior.registry.cli.app", "score", str(path)]
    cmd += ["--device", "cpu", "--threads", "1", "--workers", "1"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, **popen)


def _stored(home: Path) -> tuple[dict, list]:
    """Each stored weights file's tensors hash, and the result rows (key, status, score, metrics)."""
    weights = {
        f.name: file_metadata(f)[atomic.TENSORS_HASH_KEY]
        for f in sorted((home / "weights").glob("*.safetensors"))
        if not f.name.endswith(".ckpt.safetensors")
    }
    try:
        with sqlite3.connect(home / "results.sqlite") as conn:
            rows = conn.execute(
                "SELECT job_key, status, score, metrics FROM results ORDER BY job_key"
            ).fetchall()
    except sqlite3.OperationalError:  # killed before the table was made
        rows = []
    return weights, rows


def _resumed(home: Path) -> list[str]:
    """The stored trainings whose history says they were resumed."""
    return [
        f.name
        for f in (home / "weights").glob("*.safetensors")
        if "resumed" in json.loads(file_metadata(f).get("history", "{}"))
    ]


def test_a_killed_score_resumes_mid_training_to_the_same_weights(tmp_path, write_submission):
    sub = tiny_submission("long", seeds=[0])
    sub["constraints"] = [{"name": "internal_noise", "params": {"sigma": 0.3}}]
    sub["training"].update(epochs=30, batch_size=64, augment=["crop"])
    path = write_submission(sub)

    killed_home, whole_home = tmp_path / "killed", tmp_path / "whole"
    proc = _score(killed_home, path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    checkpoints = killed_home / "weights"
    while time.time() < deadline and not list(checkpoints.glob("*.ckpt.safetensors")):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.05)
    time.sleep(1.0)  # a later checkpoint, mid-training
    assert proc.poll() is None, "the run ended before it was killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(checkpoints.glob("*.ckpt.safetensors")), "no checkpoint written"
    assert _stored(killed_home) == ({}, []), "the kill landed after the training"

    whole = _score(whole_home, path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    again = _score(killed_home, path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "resuming" in out + err, out + err
    whole_out, whole_err = whole.communicate(timeout=300)
    assert whole.returncode == 0, whole_err
    assert "resuming" not in whole_out + whole_err

    assert _stored(killed_home) == _stored(whole_home)  # weights, scores and metrics
    assert _resumed(killed_home) and not _resumed(whole_home)
    assert not list(killed_home.rglob("*.ckpt.safetensors")), "checkpoint left behind"


@pytest.mark.parametrize(
    ("workers", "group"),
    [(1, False), (2, False), (2, True)],
    ids=["in-process", "two-workers", "two-workers-process-group"],
)
def test_a_score_stopped_with_sigterm_checkpoints_says_so_and_resumes(
    tmp_path, write_submission, workers, group
):
    """``kill <scorer>``, or SIGTERM to its whole process group (a batch scheduler's or a service
    manager's stop: each worker gets it twice, from the sender and from the scorer): the
    trainings under way (in the scorer, or one in each of two worker processes) write a
    checkpoint (none is due on the interval), the scorer says where it stopped and exits 143;
    the same command resumes them and finishes."""
    sub = tiny_submission("stopped", seeds=list(range(workers)))
    sub["training"].update(epochs=120, batch_size=64)
    path = write_submission(sub)
    home = tmp_path / "home"
    env = {**os.environ, "BIOPRIOR_HOME": str(home), ckpt.INTERVAL_ENV: "3600"}
    cmd = [sys.executable, "-m", "bioprior.registry.cli.app", "score", str(path), "--device"]
    cmd += ["cpu", "--threads", str(workers), "--workers", str(workers), "--batch", "1"]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=group,
    )
    lines, training = [], set()
    for line in proc.stdout:  # stop once each worker's training has said its progress
        lines.append(line)
        progress = re.search(r"epoch \d+/120 .*?(: .*)?$", line)
        training |= {progress.group(1)} if progress else set()
        if len(training) == workers:
            if group:
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                proc.send_signal(signal.SIGTERM)
            break
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM, out
    assert f"stopped (SIGTERM): 0 of {workers} jobs stored in" in out, out
    assert "run the same command again to resume" in out
    assert len(list((home / "weights").glob("*.ckpt.safetensors"))) == workers, out

    # the plan counts what is left of each training: from the epoch its checkpoint resumes at
    plan = subprocess.run(
        [*cmd, "--dry-run"], cwd=ROOT, env=env, text=True, capture_output=True, check=False
    )
    assert plan.returncode == 0, plan.stderr
    planned = sorted(re.findall(r"resumes from its checkpoint at epoch (\d+) of 120", plan.stdout))
    assert len(planned) == workers, plan.stdout

    again = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True, check=False)
    assert again.returncode == 0, again.stderr
    said = again.stdout + again.stderr
    assert said.count("resuming") == workers, again.stdout
    assert sorted(re.findall(r"from its checkpoint \(epoch (\d+),", said)) == planned, said
    assert f"({workers} training{'s' * (workers > 1)} resume from checkpoints)" in said, said
    assert _resumed(home), "no stored training says it was resumed"
    assert not list(home.rglob("*.ckpt.safetensors")), "checkpoint left behind"
