"""An evaluation never run before is estimated from the passes its benchmark declares
(``Benchmark.work``): the adversarial benchmark counts its attack steps, and the plan times one
forward and one input-gradient pass of the model. Before, such a run counted as one forward pass
per split: on Fashion-MNIST the Table 2 evaluation planned at about a second took minutes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import tiny_submission

import bioprior
from bioprior.benchmarks.adversarial import Adversarial, AdversarialParams, gradient_passes
from bioprior.plugin import Work
from bioprior.registry.base import safe_yaml, threads
from bioprior.registry.base.threads import CoreShare, usable_cores
from bioprior.registry.hooks.loading import get_registry
from bioprior.registry.planning.needs import Needs
from bioprior.registry.planning.steps import EvaluateStep
from bioprior.registry.scoring.scorer import Scorer
from bioprior.registry.store.results import ResultStore
from bioprior.registry.submissions.loading import validate_submission_dict

ROOT = Path(__file__).resolve().parents[1]
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
TABLE2 = ROOT / "submissions" / "evanson-table2-fmnist.yaml"


def _table2() -> dict:
    return safe_yaml.load_file(TABLE2)[0]


def _work(params: dict):
    registry = get_registry()
    bench = Adversarial(AdversarialParams(**params))
    return bench.work(Needs(None, registry))


def test_table2s_evaluation_counts_its_attack_steps():
    """evanson Table 2's benchmark, passes per test image written out from the protocol: the
    clean pass; FGSM's one gradient serving its four nonzero epsilons and a forward at each of
    its five; PGD's 20 steps at 0.1 and its two forwards; FGSM again at the score epsilon (the
    single-step check); the unbounded check's 50 PGD steps and its forward; the margin gradient."""
    params = _table2()["benchmarks"][0]["params"]
    work = _work(params)
    assert work.images == 10_000
    assert work.forward == 1 + 5 + 2 + 1 + 1
    assert work.gradient == 1 + 20 + 1 + 50 + 1


def test_a_model_random_at_inference_adds_the_stochastic_mode():
    """Table 2's protocol on a model random at inference (random thresholds): the deterministic
    copy as above, then the model itself, each gradient averaged over 8 passes (EOT) and each
    accuracy over 4 draws: FGSM's gradient no longer serves every epsilon, the score attack also
    runs once without EOT."""
    work = _work(_table2()["benchmarks"][0]["params"]).stochastic
    eot, draws = 8, 4
    stochastic_gradient = (
        4 * eot  # FGSM at each nonzero epsilon
        + 20 * eot  # PGD at 0.1
        + eot
        + 1  # FGSM at the score epsilon, with and without EOT
        + 50 * eot  # the unbounded check
        + 1  # the margin gradient
    )
    assert work.gradient == 73 + stochastic_gradient
    assert work.forward == 10 + draws * (1 + 5 + 2 + 2 + 1)


def test_the_default_protocol_counts_transfer_and_minimal_attacks():
    work = _work({"images": 200})
    curves = 1 + 5 * 20 + 4 * 20  # FGSM (shared gradient), PGD Linf and L2 at nonzero epsilons
    single_step, unbounded, margin = 1, 50, 1
    transfer = 5 * 20  # PGD on the surrogate at the score curve's five nonzero epsilons
    minimal = 100 / 200 * (20 * 10 + 20 * 10 + 5 * 100 + 100 + 4 * 100)  # on 100 of 200 images
    assert work.gradient == pytest.approx(
        curves + single_step + unbounded + margin + transfer + minimal
    )
    minimal_accuracies = 100 / 200 * (1 + 8)  # clean, then each attack's adversarials
    assert work.forward == 1 + (8 + 6 + 5) + 1 + 1 + (2 * 6 + 1) + minimal_accuracies


def test_attack_budgets_from_their_parameters():
    registry = get_registry()

    def params(name: str, **p):
        return registry.get("attack", name).params(**p)

    assert gradient_passes(params("fgsm")) == 1
    assert gradient_passes(params("pgd_linf", steps=7)) == 7
    assert gradient_passes(params("cw_l2")) == 5 * 100  # binary search x Adam steps
    assert gradient_passes(params("pgd_linf_search")) == 20 * 10  # bisection x PGD steps
    assert gradient_passes(params("fmn_linf")) == 100  # its boundary search is forward only
    assert gradient_passes(params("bb_l2")) == 200
    # a random start makes FGSM's gradient differ per epsilon
    score = {"score_curve": "f", "score_epsilon": 0.1}
    shared = _work(
        {"curves": {"f": {"attack": {"name": "fgsm"}, "epsilons": [0, 0.1, 0.2]}}, **score}
    )
    own = _work(
        {
            "curves": {
                "f": {
                    "attack": {"name": "fgsm", "params": {"random_start": True}},
                    "epsilons": [0, 0.1, 0.2],
                }
            },
            **score,
        }
    )
    assert own.gradient - shared.gradient == 1


def _plan_estimates(home: Path, sub: dict, share: CoreShare) -> list:
    """(seed, estimate) of each evaluation the plan of ``sub`` makes, in the plan's order."""
    registry = get_registry()
    loaded = validate_submission_dict(sub, registry)
    with ResultStore(home / "results.sqlite") as store:
        scorer = Scorer(store, registry, device="cpu", max_batch=1)
        _, summary = scorer.plan([loaded])
        estimates = scorer.estimate(summary, share)
    steps = [s for s in summary.steps if isinstance(s, EvaluateStep)]
    return [(s.job.seed, estimates[s.key]) for s in steps]


def _plan_estimate(home: Path, sub: dict, share: CoreShare):
    [(_, estimate)] = _plan_estimates(home, sub, share)
    return estimate


def _one_epoch_table2(name: str, threshold: str, benchmark: dict) -> dict:
    """The Table 2 network, one epoch on 2,000 real Fashion-MNIST images, scored on
    ``benchmark`` (skips where Debian's dataset-fashion-mnist is missing)."""
    if not (DEBIAN / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    return {
        "name": name,
        "model": _table2()["model"],
        "constraints": [{"name": "flexible_layer", "params": {"threshold": threshold}}],
        "training": {
            "dataset": {
                "name": "subset",
                "params": {"source": {"name": "fashion_mnist"}, "examples_per_class": 200},
            },
            "epochs": 1,
            "batch_size": 100,
            "optimizer": "sgd",
            "lr": 0.01,
        },
        "seeds": [0],
        "benchmarks": [benchmark],
    }


@pytest.mark.slow
@pytest.mark.parametrize(("threshold", "images"), [("conv", 2000), ("random", 300)])
def test_a_never_run_adversarial_evaluation_is_estimated_within_25_percent(
    bioprior_home, threshold, images
):
    """The Table 2 network (one epoch on 2,000 real Fashion-MNIST images; with random
    thresholds, random at inference: attacked with EOT) and Table 2's attack protocol on real
    test images, one thread: the plan's estimate, made before anything ran, within 25% of the
    evaluation's time."""
    params = {**_table2()["benchmarks"][0]["params"], "images": images}
    sub = _one_epoch_table2("work-estimate", threshold, {"name": "adversarial", "params": params})
    choice = threads.ThreadChoice(1, "--threads", usable_cores())
    with threads.using(choice):
        estimate = _plan_estimate(bioprior_home, sub, CoreShare.now(1, 1, usable_cores()))
    assert "as its benchmark counts them" in estimate.note
    [row] = bioprior.score(sub, device="cpu", workers=1, threads=1)
    assert row["status"] == "ok", row
    assert estimate.seconds == pytest.approx(row["duration_s"], rel=0.25), (
        estimate.seconds,
        row["duration_s"],
    )


def _raises(self, needs):
    raise RuntimeError("no count today")


@pytest.mark.parametrize(
    ("work", "says"),
    [
        (_raises, "work() failed: no count today"),
        (lambda self, needs: Work(forward=-1.0), "not a Work of passes >= 0"),
        (lambda self, needs: Work(gradient=float("nan")), "not a Work of passes >= 0"),
        (lambda self, needs: {"forward": 3}, "not a Work of passes >= 0"),
        (lambda self, needs: Work(stochastic=Work(gradient=math.inf)), "not a Work of passes"),
    ],
    ids=["raises", "negative", "nan", "a dict", "infinite stochastic"],
)
def test_a_bad_work_count_falls_back_to_the_floor(bioprior_home, monkeypatch, work, says):
    """A third party's ``work`` that raises or returns nonsense costs the plan its count, not the
    step's estimate, and the plan says why."""
    monkeypatch.setattr(Adversarial, "work", work)
    sub = tiny_submission("broken-work", benchmarks=[{"name": "adversarial", "params": {}}])
    estimate = _plan_estimate(bioprior_home, sub, CoreShare(1, 1, 2, 0.0))
    assert 0 < estimate.seconds < math.inf
    assert says in estimate.note


def _family_work(name: str, params: dict | None = None) -> Work:
    entry = get_registry().get("benchmark", name)
    bench = entry.factory(entry.params.model_validate(params or {}))
    return bench.work(Needs(None, get_registry()))


def test_the_stimulus_families_count_their_conditions():
    """Per test image, with the default parameters: corruption evaluates clean, the resampling
    round trip, 19 corruptions x 5 severities and 11 + 11 + 8 noise levels, for its model and
    its baseline, plus the float clean accuracy; spectral clean, 32 bands, 7 low-pass and 7
    high-pass cutoffs and 19 x 5 corrupted sets; ood_stylized clean and 6 styles. Each generates
    its stimuli first."""
    corruption = _family_work("corruption")
    assert corruption.forward == (2 + 19 * 5 + 11 + 11 + 8) * 2 + 1
    assert _family_work("corruption", {"baseline": None}).forward == 2 + 19 * 5 + 11 + 11 + 8 + 1
    assert _family_work("spectral").forward == 1 + 32 + 7 + 7 + 19 * 5
    assert _family_work("ood_stylized").forward == 1 + 6
    assert _family_work("ood_stylized", {"max_images": 500}).images == 500
    for name in ("corruption", "spectral", "ood_stylized"):
        work = _family_work(name)
        assert work.stimuli and work.gradient == 0, name


SMALL_CORRUPTION = {
    "corruptions": ["gaussian_noise", "glass_blur", "fog"],
    "severities": [1, 5],
    "noise_sweeps": ["uniform_noise"],
    "geirhos_levels": [0.1, 0.3],
    "baseline": None,
}


def test_only_the_first_run_of_a_seed_is_planned_to_generate_its_stimuli(bioprior_home):
    """Two models x two seeds on corruption: per seed, the plan's first evaluation generates the
    corrupted sets (timed through the benchmark's preview) and the other finds them made."""
    sub = tiny_submission(
        "stimuli-plan",
        seeds=[0, 1],
        sweep={"constraints.0.params.sigma": [0.0, 0.1]},
        benchmarks=[{"name": "corruption", "params": SMALL_CORRUPTION}],
    )
    plan = _plan_estimates(bioprior_home, sub, CoreShare(1, 2, 2, 0.0))
    for seed in (0, 1):
        notes = [e.note for s, e in plan if s == seed]
        assert len(notes) == 2
        assert sum("its stimuli generated first" in n for n in notes) == 1, notes
        assert sum("its stimuli made by an earlier step" in n for n in notes) == 1, notes
    first, later = (
        next(e for s, e in plan if s == 0 and "generated first" in e.note),
        next(e for s, e in plan if s == 0 and "earlier step" in e.note),
    )
    assert first.seconds > later.seconds > 0
    assert "serially in its worker" in first.note  # two workers: each generates serially


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_never_run_corruption_evaluation_is_estimated_within_25_percent(bioprior_home, workers):
    """The Table 2 network (one epoch on 2,000 real Fashion-MNIST images) on corruption (three
    imagecorruptions at two severities, two noise levels) on 2,000 real test images: the plan's
    estimate of the first run, generation of the corrupted sets included (a process pool in a
    run alone, serially in a worker), within 25% of the evaluation's time."""
    params = {**SMALL_CORRUPTION, "max_images": 2000}
    sub = _one_epoch_table2("stimuli-estimate", "conv", {"name": "corruption", "params": params})
    cores = usable_cores()
    choice = threads.ThreadChoice(1, "--threads", cores)
    with threads.using(choice):
        estimate = _plan_estimate(bioprior_home, sub, CoreShare.now(1, workers, cores))
    assert "its stimuli generated first" in estimate.note
    [row] = bioprior.score(sub, device="cpu", workers=workers, threads=workers)
    assert row["status"] == "ok", row
    assert row["metrics"]["stimuli"]["generated"] > 0
    print(f"workers {workers}: estimated {estimate.seconds:.1f} s, took {row['duration_s']:.1f} s")
    assert estimate.seconds == pytest.approx(row["duration_s"], rel=0.25), (
        estimate.seconds,
        row["duration_s"],
    )
