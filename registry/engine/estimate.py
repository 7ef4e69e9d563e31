"""Work estimates for the plan: FLOPs from one measured forward (``torch.utils.flop_counter``),
seconds from a short calibration of the real training step on the chosen device, and the
automatic number of members per batched training (what fits in memory, where batching pays).

Estimates are per step: a training step costs ``steps_per_epoch x epochs`` calibrated steps of
its K members together. An evaluation like one already stored (same benchmark and parameters,
model and dataset) is estimated from those runs' times (:class:`MeasuredTimes`: whether it must
generate its stimuli or finds them cached is told apart, and one that generates is timed by the
runs that found theirs cached plus its generation counted; CPU workers side by side split a
seed's generation: :func:`share_generation`); one never run before is counted from
the passes its benchmark declares (``Benchmark.work``: forward and input-gradient passes per
test image, each timed on the model; the first of its seed adds the generation of its stimuli
where it declares them, its ``preview`` timed on a few images: :class:`StimulusGeneration`),
else as one forward pass over the train and test splits of every model it declared, a floor
(benchmarks that evaluate many conditions take longer).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bioprior.registry.base.hashing import content_hash
from bioprior.registry.base.progress import human_seconds
from bioprior.registry.base.threads import CoreShare
from bioprior.registry.contracts.benchmark import Work
from bioprior.registry.engine.checkpoint import interval_from_env
from bioprior.registry.engine.journal import journal_progress
from bioprior.registry.engine.streaming import streams
from bioprior.registry.planning.declare import build_benchmark
from bioprior.registry.planning.needs import Needs
from bioprior.registry.planning.spec import TrainingSpec
from bioprior.registry.planning.steps import EvaluateStep, TrainStep
from bioprior.registry.store.weights import journal_file
from bioprior.registry.toolkit.data import to_float

#: most members per batched training when memory would allow more (CPU / GPU)
CAP = {"cpu": 16, "cuda": 64}

#: On a CPU, batching pays only for launch-bound members: under this many training FLOPs per
#: step per convolution or linear layer. Measured with 2 threads on an AVX-512 CPU (digits):
#: small_inception width 0.1 at 16 px, 13 MFLOP per layer, trains 2.3x faster batched (K = 8);
#: small_alexnet width 0.1 at 8 px, 30 MFLOP, 1.0x (K = 4); at 16 px, 60 MFLOP, 0.8x (K = 8);
#: the quickstart's width-0.5 AlexNet, 700 MFLOP, 0.9x (K = 4). A rule of the spec and the
#: device, not a timing, so that a plan (and its numbers) is the same on every run of a machine.
CPU_BATCHING_FLOPS_PER_LAYER = 20e6


@dataclass(frozen=True)
class Profile:
    """One model on its data, from one measured forward of a single image."""

    forward_flops: int  # per image
    params: int
    activations: int  # output elements of every leaf module, per image
    layer_calls: int  # convolution and linear layer calls in one forward
    train_images: int
    test_images: int
    image_bytes: int  # one training image
    streamed: bool = False  # the training split stays in host memory (:mod:`.streaming`)


@dataclass(frozen=True)
class Estimate:
    seconds: float
    flops: float
    note: str = ""
    #: a training that resumes from an earlier run's checkpoint: (epoch, examples into it)
    resumes_at: tuple[int, int] | None = None
    #: an evaluation timed by runs that found their stimuli cached, for a step that generates
    #: its own: their generation is not in ``seconds`` (:meth:`MeasuredTimes.estimate`)
    without_generation: bool = False
    #: seconds of ``seconds`` that generate stimuli (the first evaluation of their seed)
    generation: float = 0.0


_profiles: dict[str, Profile] = {}
_calibrated: dict[tuple[str, int], float] = {}


def profile(spec: TrainingSpec, service: Any) -> Profile:
    key = spec.batch_group or spec.key
    if key in _profiles:
        return _profiles[key]
    data = service.data(spec)
    module = service.build(spec, data)
    module.eval()
    counts = [0, 0]  # output elements, convolution / linear calls

    def hook(m: nn.Module, _i: Any, out: Any) -> None:
        counts[1] += isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
        if isinstance(out, torch.Tensor):
            counts[0] += out.numel()

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(to_float(data.train_x[:1].to(service.device)))  # streamed data: on the host
    finally:
        for h in handles:
            h.remove()
    x = data.train_x
    result = Profile(
        forward_flops=int(counter.get_total_flops()),
        params=sum(p.numel() for p in module.parameters()),
        activations=counts[0],
        layer_calls=counts[1],
        train_images=len(data.train_x),
        test_images=len(data.test_x),
        image_bytes=x[:1].numel() * x.element_size(),
        streamed=streams(x, service.device),
    )
    _profiles[key] = result
    return result


def member_bytes(p: Profile, spec: TrainingSpec) -> int:
    """Memory of one member in training: weights, gradients and two optimizer states, its
    training set (two batches of it where it streams from host memory), and activations kept for
    the backward pass (about 3x the outputs)."""
    fp32 = 4
    batch = spec.recipe.batch_size
    data = 2 * batch if p.streamed else p.train_images  # images on the device: two batches
    return 4 * p.params * fp32 + data * p.image_bytes + 3 * batch * p.activations * fp32


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * 0.8)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * 0.5)
    except (ValueError, OSError):
        return 4 << 30


#: what a CPU worker process holds beyond its training: its allocator's kept free memory
#: (:mod:`.allocator`), the pages of the driver it copies on write, its evaluation's batches
WORKER_BYTES = 512 << 20


def workers_that_fit(steps: list, service: Any) -> int:
    """How many of these training steps fit in memory at once on a CPU: half the free memory
    (:func:`available_bytes`) over the largest step's need, its members (:func:`member_bytes`)
    and a worker's own ``WORKER_BYTES``; at least one."""
    need = max(
        (
            WORKER_BYTES + sum(member_bytes(profile(m, service), m) for m in step.members)
            for step in steps
        ),
        default=WORKER_BYTES,
    )
    return max(1, available_bytes(service.device) // need)


_limits: dict[str, int] = {}


def auto_batch_limit(spec: TrainingSpec, service: Any, size: int = 1 << 30) -> int:
    """Members per batched training: as many as fit in half the free memory (80% of a GPU's),
    at most ``CAP``; 1 where batching does not pay (:func:`batching_pays`); never more than
    ``size``, the members there are."""
    group = f"{spec.batch_group or spec.key}:{size}"
    if group in _limits:
        return _limits[group]
    p = profile(spec, service)
    device = service.device
    fits = available_bytes(device) // max(1, member_bytes(p, spec))
    k = int(max(1, min(CAP.get(device.type, 16), fits, size)))
    if not batching_pays(p, spec, device):
        k = 1
    _limits[group] = k
    return k


def batching_pays(p: Profile, spec: TrainingSpec, device: torch.device) -> bool:
    """Whether K members trained as one model beat K solo trainings on ``device``: always on a
    GPU (small models are launch-bound there); on a CPU only when a member's step is
    launch-bound, under ``CPU_BATCHING_FLOPS_PER_LAYER`` training FLOPs per convolution or
    linear layer (a compute-bound step runs its convolutions as fast alone as grouped)."""
    if device.type != "cpu":
        return True
    step_flops = 3 * p.forward_flops * spec.recipe.batch_size  # forward + backward
    return step_flops / max(1, p.layer_calls) < CPU_BATCHING_FLOPS_PER_LAYER


#: calibration: optimizer steps timed at least (after a warm-up step), and the time they fill
#: at least, so that one slow moment of a busy machine moves an estimate little
CALIBRATION_STEPS, CALIBRATION_SECONDS, CALIBRATION_MAX_STEPS = 4, 1.0, 200


def calibrate(step: TrainStep, service: Any, steps: int = CALIBRATION_STEPS) -> float:
    """Seconds per optimizer step of this step's K members together, measured with the real
    engine on random images of the members' geometry: one warm-up training of a step, then
    ``steps`` steps, then, where those took under :data:`CALIBRATION_SECONDS`, as many more as
    fill it (at most :data:`CALIBRATION_MAX_STEPS`). It runs at the thread count the run will
    use and under the machine's present load, so a busy machine gets a longer estimate; a slight
    overestimate (the training's setup is included)."""
    from bioprior.registry.engine.batched import train_batched  # lazy: torch
    from bioprior.registry.engine.trainer import train_model  # lazy: torch

    first = step.members[0]
    k = len(step.members)
    data = service.data(first)
    key = (cost_key(first, data) if k == 1 else first.batch_group or first.key, k)
    if key in _calibrated:
        return _calibrated[key]
    bs = first.recipe.batch_size
    gen = torch.Generator().manual_seed(0)
    recipe = first.recipe.model_copy(update={"epochs": 1})

    def timed(m: int) -> float:
        x = torch.rand((m * bs, *data.train_x.shape[1:]), generator=gen)
        y = torch.randint(0, data.num_classes, (m * bs,), generator=gen)
        xm, ym = x.to(data.train_x.device), y.to(data.train_y.device)
        modules = [service.build(first, data) for _ in range(k)]
        sync(service.device)
        t0 = time.perf_counter()
        if k == 1:
            train_model(modules[0], xm, ym, recipe, first.seed)
        else:
            train_batched(modules, [xm] * k, [ym] * k, [recipe] * k, [first.seed] * k)
        sync(service.device)
        return time.perf_counter() - t0

    timed(1)  # warm-up
    seconds = timed(steps)
    if seconds < CALIBRATION_SECONDS:
        more = min(CALIBRATION_MAX_STEPS, int(steps * CALIBRATION_SECONDS / max(seconds, 1e-6)))
        if more > steps:
            steps, seconds = more, timed(more)
    per_step = seconds / steps  # the setup is amortized, not subtracted
    _calibrated[key] = per_step
    return per_step


_passes: dict[str, tuple[float, float, bool]] = {}

#: images per timed batch of :func:`calibrate_passes` (the adversarial benchmark's attack batch)
PASS_BATCH = 256


def calibrate_passes(spec: TrainingSpec, service: Any) -> tuple[float, float, bool]:
    """Seconds per image of a forward pass (under ``inference_mode``) and of a gradient pass
    (forward and backward to the input, the weights frozen: an attack step) of ``spec``'s model
    (initialized, not trained) on its first test images, in batches of :data:`PASS_BATCH`
    (random images of its geometry where it has none): a warm-up batch, then as
    many as fill :data:`CALIBRATION_SECONDS` (at least two), at the run's thread count under
    the present load, like :func:`calibrate`; and whether the model is random at inference (two
    passes over the batch differ)."""
    data = service.data(spec)
    key = cost_key(spec, data)
    if key in _passes:
        return _passes[key]
    module = service.build(spec, data).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    if len(data.test_x):  # the images it will see: a pooling's ties, a sigmoid's range
        x = to_float(data.test_x[:PASS_BATCH].to(service.device))
    else:
        gen = torch.Generator().manual_seed(0)
        x = torch.rand((PASS_BATCH, *data.train_x.shape[1:]), generator=gen).to(service.device)

    def forward() -> None:
        with torch.inference_mode():
            module(x)

    def gradient() -> None:
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(module(xg).logsumexp(1).sum(), xg)

    def per_image(f: Any) -> float:
        f()  # warm-up
        n, t0 = 0, time.perf_counter()
        while n < 2 or time.perf_counter() - t0 < CALIBRATION_SECONDS / 2:
            f()
            n += 1
        sync(service.device)
        return (time.perf_counter() - t0) / (n * PASS_BATCH)

    with torch.inference_mode():
        stochastic = not torch.equal(module(x), module(x))
    _passes[key] = (per_image(forward), per_image(gradient), stochastic)
    return _passes[key]


def cost_key(spec: TrainingSpec, data: Any) -> str:
    """What a solo training step costs depends on: the model, the constraints with their
    parameters (sigma 0 skips the noise), the recipe, and the shape of the training images
    (the calibration trains on random images of that shape); not on the images themselves or the
    seed: natural and random data of one shape cost the same, and are calibrated once."""
    identity = spec.identity()
    parts = [identity["model"], identity["constraints"], identity["recipe"]]
    return content_hash([*parts, list(data.train_x.shape)])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: evaluations timed from the latest runs only: the code (a faster attack path) and the
#: machine's load change between runs, and the latest runs are the likeliest to repeat
RECENT_RUNS = 3


class MeasuredTimes:
    """Evaluation seconds measured by earlier runs (the store's finished rows), by cost
    signature (:func:`~bioprior.registry.planning.jobs.cost_signature`): an evaluation like one
    already run is estimated from the latest of those runs (those of its own constraints where
    there are any), separately for a job that generates its stimuli (the first of its
    benchmark, data and seed: e.g. corruption's 19 x 5 corrupted test sets) and for one that
    finds them cached (every other model of that seed).

    On a CPU, a run that recorded its CPU seconds counts as that much work, done now at the
    cores a step will get (``share``: the run's workers side by side and the load of the
    moment), not as the wall time it took under the load of its own day; other runs (a GPU's,
    rows from before CPU seconds were recorded) give their wall time."""

    def __init__(
        self, measured: Iterable[Any] = (), share: CoreShare | None = None, on_cpu: bool = True
    ):
        self.by_signature: dict[str, list[Any]] = {}
        self.stimuli: set[tuple[str, int]] = set()  # (stimuli signature, seed) generated
        self.share = share if on_cpu else None
        for m in measured:
            self.by_signature.setdefault(m.signature, []).append(m)
            self.stimuli.add((m.stimuli, m.seed))

    def seconds(self, run: Any) -> float:
        """What ``run`` would take now: its CPU seconds at the cores a step gets now, or its
        wall time (a GPU run, an older row, a run that generated its stimuli: a process pool's
        CPU seconds are not its own)."""
        cpu = getattr(run, "cpu_seconds", None)
        on_cpu = str(run.device).startswith("cpu")
        if self.share is None or cpu is None or not on_cpu or getattr(run, "generated", None):
            return run.seconds
        return cpu / self.share.per_step

    def fresh(self, step: EvaluateStep) -> bool:
        """Whether ``step`` is the first to need its stimuli (no earlier run, no earlier step of
        the plan had them): asked before :meth:`estimate`, which notes them."""
        return (step.job.stimuli_signature, step.job.seed) not in self.stimuli

    def estimate(self, step: EvaluateStep, flops: float) -> Estimate | None:
        """The step's time from earlier runs, or None where there are none. A step that must
        generate its stimuli is timed by runs that found theirs cached, where there are any,
        and its estimate says so (``Estimate.without_generation``): the caller adds the
        generation, counted for how this run will generate (:class:`StimulusGeneration`). A run
        that generated is a poor measure of another that will: its pool's processes are not in
        its CPU seconds, and a pool, a serial worker and two workers splitting the sets take
        very different times for the same sets."""
        fresh = self.fresh(step)
        self.stimuli.add((step.job.stimuli_signature, step.job.seed))  # later steps find them
        runs = self.by_signature.get(step.job.cost_signature, [])
        if not runs:
            return None
        cached = [m for m in runs if m.generated is False]
        without_generation = fresh and bool(cached)
        alike = cached if without_generation else [m for m in runs if m.generated in (fresh, None)]
        pool = alike or runs
        same = [m for m in pool if getattr(m, "constraints", "") == step.job.constraints_signature]
        recent = (same or pool)[-RECENT_RUNS:]
        how = "" if alike else ", none with its stimuli " + ("to generate" if fresh else "cached")
        how += ", of these constraints" if same else ", of other constraints"
        scaled = self.share is not None and any(
            getattr(m, "cpu_seconds", None) is not None and not m.generated for m in recent
        )
        at = f" at {self.share.describe()}" if scaled and self.share else ""
        what = "its evaluation as measured" if without_generation else "as measured"
        note = f"{what}: median of the last {len(recent)} run(s){how}{at}"
        seconds = statistics.median(self.seconds(m) for m in recent)
        return Estimate(seconds, flops, note, without_generation=without_generation)


def estimate_steps(
    steps: list,
    service: Any,
    measured: Iterable[Any] = (),
    share: CoreShare | None = None,
    registry: Any = None,
) -> dict[str, Estimate]:
    """An :class:`Estimate` per step key; ``measured``: earlier evaluations' times
    (:meth:`~bioprior.registry.store.results.ResultStore.evaluation_times`); ``share``: the
    cores each step will get (on a CPU), which scales measured CPU seconds and the trainings'
    calibration (measured in this process alone) to the run's workers side by side;
    ``registry``: the plugins, for a benchmark's own count of its passes (``Benchmark.work``)."""
    out: dict[str, Estimate] = {}
    forward_rate: dict[str, float] = {}
    on_cpu = service.device.type == "cpu"
    times = MeasuredTimes(measured, share, on_cpu)
    slowdown = share.slowdown if share is not None and on_cpu else 1.0
    generation = StimulusGeneration(share if on_cpu else None, slowdown)
    for step in steps:
        try:
            estimate = _estimate(step, service, forward_rate, times, slowdown, registry, generation)
        except Exception:  # noqa: BLE001, S112 - a step that cannot be built fails when it runs
            continue
        if isinstance(step, EvaluateStep) and estimate is not None:
            estimate = _resumed_evaluation(estimate, step, service)
        if estimate is not None:
            out[step.key] = estimate
    if not generation.pooled:
        share_generation(steps, out, generation.share.workers)
    return out


def share_generation(steps: list, estimates: dict[str, Estimate], workers: int) -> None:
    """Split each seed's stimulus generation between the CPU workers that do it: evaluations of
    one seed and dataset that become ready together (the same trainings to wait for) start side
    by side, and each worker generates the sets no other holds (a lock per set, then it reads
    the others': ``benchmarks/stimuli.py``), so the first ``workers`` of them carry a share of
    the generation each, not the first one all of it. Evanson Table 2's 12 evaluations of a
    seed on two workers: the first two took 9.0 and 8.4 min, where one was planned at 15.7."""
    cohorts: dict[tuple[Any, ...], list[str]] = {}
    for step in steps:
        if isinstance(step, EvaluateStep) and step.key in estimates:
            dataset = content_hash(step.job.identity()["training"].get("dataset"))
            cohort = (step.job.seed, dataset, tuple(sorted(step.depends_on)))
            cohorts.setdefault(cohort, []).append(step.key)
    for keys in cohorts.values():
        made = sum(estimates[k].generation for k in keys)
        if made <= 0 or len(keys) < 2:
            continue
        n = min(workers, len(keys))
        for i, key in enumerate(keys):
            e = estimates[key]
            part = made / n if i < n else 0.0
            if part == e.generation:
                continue
            note = e.note
            if part:
                note += (
                    f"; its seed's stimuli split between {n} workers: ~{human_seconds(part)} here"
                )
            else:
                note += "; its seed's stimuli made by the workers before it"
            estimates[key] = replace(
                e, seconds=e.seconds - e.generation + part, note=note, generation=part
            )


def _estimate(
    step: Any,
    service: Any,
    forward_rate: dict[str, float],
    times: MeasuredTimes,
    slowdown: float,
    registry: Any,
    generation: StimulusGeneration,
) -> Estimate | None:
    if isinstance(step, TrainStep):
        first = step.members[0]
        p = profile(first, service)
        per_epoch = -(-p.train_images // first.recipe.batch_size)
        n_steps = per_epoch * first.recipe.epochs
        per_step = calibrate(step, service) * slowdown
        flops = 3.0 * p.forward_flops * p.train_images * first.recipe.epochs * len(step.members)
        forward_rate[first.batch_group or first.key] = per_step * n_steps / max(1.0, flops)
        resumes = _resumes_at(step, service)
        if resumes is None:
            return Estimate(per_step * n_steps, flops)
        epoch, position = resumes
        done = min(n_steps, epoch * per_epoch + -(-position // first.recipe.batch_size))
        left = (n_steps - done) / max(1, n_steps)
        note = f"resumes from its checkpoint at epoch {epoch + 1} of {first.recipe.epochs}"
        return Estimate(per_step * (n_steps - done), flops * left, note, resumes)
    elif isinstance(step, EvaluateStep):
        specs = step.declared
        flops = sum(_one_pass_flops(profile(s, service)) for s in specs)
        fresh = times.fresh(step)
        measured = times.estimate(step, flops)  # every step, in order: it notes stimuli made
        if measured is not None and measured.without_generation:
            return _with_generation(measured, step, service, registry, generation)
        if measured is not None:
            return measured
        floor = "not run before: one pass per split and model"
        try:
            counted = _counted_work(
                step, service, registry, slowdown, generation if fresh else None
            )
        except Exception as exc:  # noqa: BLE001 - a plugin's count must not cost the estimate
            counted, floor = None, f"{floor} (its benchmark's work() failed: {exc})"
        if counted is not None:
            return counted
        return Estimate(_one_pass_seconds(specs, service, forward_rate, slowdown), flops, floor)
    return None


def _resumed_evaluation(estimate: Estimate, step: EvaluateStep, service: Any) -> Estimate:
    """``estimate`` less the seconds an earlier run's journal says its recorded units took
    (:mod:`.journal`; at least a twentieth of it is left: the rest of the job, the recalls). The
    estimates run at the workers' thread count, which a journal is trusted for only."""
    weights_dir = getattr(service, "weights_dir", None)
    try:
        kept = weights_dir is not None and interval_from_env() is not None
    except ValueError:  # BIOPRIOR_CHECKPOINT_INTERVAL unreadable: the run says so
        kept = False
    path = journal_file(weights_dir, step.key) if kept else None
    found = path and journal_progress(
        path, job=step.key, threads=torch.get_num_threads(), device=service.device.type
    )
    if found is None:
        return estimate
    units, done = found
    note = f"resumes from its journal: {units} units, ~{human_seconds(done)} of work done"
    seconds = max(estimate.seconds - done, estimate.seconds / 20)
    return replace(estimate, seconds=seconds, note=f"{estimate.note}; {note}".lstrip("; "))


def _resumes_at(step: TrainStep, service: Any) -> tuple[int, int] | None:
    """Where the step's training resumes from a checkpoint of an earlier run, if it will."""
    checkpointer = getattr(service, "checkpointer", None)
    if checkpointer is None:
        return None
    try:
        return checkpointer(list(step.members)).progress()
    except ValueError:  # BIOPRIOR_CHECKPOINT_INTERVAL unreadable: the run says so
        return None


def _one_pass_seconds(
    specs: tuple[TrainingSpec, ...], service: Any, forward_rate: dict[str, float], slowdown: float
) -> float:
    """The floor: one forward pass over the train and test splits of every model, at the rate
    the calibration of its training step measured (timed here for a model trained earlier)."""
    seconds = 0.0
    for spec in specs:
        p = profile(spec, service)
        key = spec.batch_group or spec.key
        if key not in forward_rate:  # trained earlier (cached): its training step, timed
            step_s = calibrate(TrainStep((spec,)), service) * slowdown
            forward_rate[key] = step_s / max(1.0, 3.0 * p.forward_flops * spec.recipe.batch_size)
        seconds += _one_pass_flops(p) * forward_rate[key] / 2  # no backward: a third to a half
    return seconds


def _one_pass_flops(p: Profile) -> float:
    return p.forward_flops * (p.train_images + p.test_images)


def check_work(work: Any) -> None:
    """A :class:`Work` of finite, non-negative passes (its stochastic count too), else
    ValueError."""
    stochastic = getattr(work, "stochastic", None) if isinstance(work, Work) else None
    for w in (work,) if stochastic is None else (work, stochastic):
        passes = (w.forward, w.gradient) if isinstance(w, Work) else (None,)
        if not all(isinstance(c, (int, float)) and 0 <= c < math.inf for c in passes):
            raise ValueError(f"not a Work of passes >= 0: {w!r}")


def declared_work(step: EvaluateStep, registry: Any) -> Any:
    """The :class:`~bioprior.registry.contracts.benchmark.Work` the step's benchmark declares
    (``Benchmark.work``), or None."""
    if registry is None:
        return None
    return build_benchmark(step.job).work(Needs(step.job, registry))


def _images_used(work: Work, p: Profile) -> int:
    """The test images a benchmark's declared work covers (``Work.images``: at most that many)."""
    return p.test_images if work.images is None else min(work.images, p.test_images)


def _with_generation(
    measured: Estimate,
    step: EvaluateStep,
    service: Any,
    registry: Any,
    generation: StimulusGeneration,
) -> Estimate:
    """``measured`` (the evaluation as timed by runs that found their stimuli cached) plus the
    generation of the step's stimuli, counted as for a step never run (its ``preview`` timed
    on a few images, for how this run generates them); ``measured`` alone where the benchmark
    declares no work to count by."""
    try:
        work = declared_work(step, registry)
        if work is None or not work.stimuli:
            return measured
        p = profile(step.job.training, service)
        made, cached = generation.seconds(step, service, _images_used(work, p))
    except Exception:  # noqa: BLE001 - a plugin's count must not cost the estimate
        return measured
    note = measured.note + generation.describe(made, cached)
    return Estimate(measured.seconds + made, measured.flops, note, generation=made)


def _counted_work(
    step: EvaluateStep,
    service: Any,
    registry: Any,
    slowdown: float,
    generation: StimulusGeneration | None = None,
) -> Estimate | None:
    """A run never timed, from the passes its benchmark declares (:func:`declared_work`), each
    timed on the job's model by :func:`calibrate_passes`, and, where it generates stimuli and
    ``generation`` is given (the plan's first step of its stimuli and seed), their generation."""
    work = declared_work(step, registry)
    if work is None:
        return None
    check_work(work)
    spec = step.job.training
    p = profile(spec, service)
    forward_s, gradient_s, stochastic = calibrate_passes(spec, service)
    stimuli = bool(work.stimuli)  # the run's, whichever count its mode takes
    if stochastic and work.stochastic is not None:
        work = work.stochastic
    images = _images_used(work, p)
    seconds = images * (work.forward * forward_s + work.gradient * gradient_s) * slowdown
    flops = images * p.forward_flops * (work.forward + 3.0 * work.gradient)
    note = (
        f"not run before: {images:,} images x ({work.forward:g} forward + "
        f"{work.gradient:g} gradient passes{', random at inference' if stochastic else ''}), "
        "as its benchmark counts them"
    )
    made = 0.0
    if stimuli:
        if generation is None:
            note += "; its stimuli made by an earlier step"
        else:
            made, cached = generation.seconds(step, service, images)
            seconds += made
            note += generation.describe(made, cached)
    return Estimate(seconds, flops, note, generation=made)


#: test images a benchmark's ``preview`` is timed on (after a warm-up on two more)
PREVIEW_IMAGES = 16
_preview_seconds: dict[str, float] = {}


def preview_seconds(step: EvaluateStep, service: Any) -> float:
    """Seconds per test image, on one core, to generate the stimuli of ``step``'s benchmark:
    its ``preview`` (the same transforms as its run, uncached) timed on the model's first
    :data:`PREVIEW_IMAGES` test images (fitted to its input) after a warm-up on two; once per
    benchmark, data and image shape."""
    spec = step.job.training
    data = service.data(spec)
    key = content_hash([step.job.stimuli_signature, list(data.test_x.shape[1:])])
    if key not in _preview_seconds:
        benchmark = build_benchmark(step.job)
        x = to_float(data.test_x[: PREVIEW_IMAGES + 2].cpu())
        benchmark.preview(x[:2], step.job.seed)  # imports, first calls
        t0 = time.perf_counter()
        benchmark.preview(x[2:], step.job.seed)
        _preview_seconds[key] = (time.perf_counter() - t0) / max(1, len(x) - 2)
    return _preview_seconds[key]


@dataclass(frozen=True)
class StimulusGeneration:
    """How a run's stimuli are generated (``benchmarks/stimuli.py``): a run alone in its process
    generates them with a process pool, one process per core, sooner than the one process its
    preview was timed in by ``share.pool_speedup`` (the cores, fewer under load; every core
    where there is no share: a GPU run); one of several CPU workers, serially, slowed as a
    training step is by the workers beside it (``slowdown``)."""

    share: CoreShare | None
    slowdown: float = 1.0

    @property
    def pooled(self) -> bool:
        return self.share is None or self.share.workers == 1

    @property
    def how(self) -> str:
        if not self.pooled:
            return "serially in its worker"
        return f"a process pool, {self._speedup():.2g}x one process"

    def _speedup(self) -> float:
        if self.share is not None:
            return max(1.0, self.share.pool_speedup)
        return float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)

    def describe(self, made: float, cached: float = 0.0) -> str:
        """The note an estimate that includes ``made`` seconds of generation adds (``cached``:
        the share an earlier run left in the cache)."""
        if cached >= 1.0:
            return "; its stimuli cached by an earlier run"
        left = f", {cached:.0%} of them cached" if cached > 0 else ""
        return f"; its stimuli generated first (~{human_seconds(made)}, {self.how}{left})"

    def seconds(self, step: EvaluateStep, service: Any, images: int) -> tuple[float, float]:
        """(seconds to generate what the cache lacks of ``step``'s stimuli, the share cached)."""
        cached = stimuli_cached(step, service)
        serial = preview_seconds(step, service) * images * (1.0 - cached)
        return (serial / self._speedup() if self.pooled else serial * self.slowdown), cached


def stimuli_cached(step: EvaluateStep, service: Any) -> float:
    """The share of ``step``'s stimuli in the cache already (a run stopped while it generated
    them), as its benchmark says (``Benchmark.stimuli_cached``); 0 where it does not say."""
    try:
        share = build_benchmark(step.job).stimuli_cached(
            service.data(step.job.training), step.job.seed
        )
    except Exception:  # noqa: BLE001 - a plugin's answer must not cost the estimate
        return 0.0
    return min(1.0, max(0.0, float(share))) if share is not None else 0.0


def human_flops(flops: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.1f} {unit}FLOP"
    return f"{flops:.0f} FLOP"
