"""The ``autoattack`` attack (Croce & Hein 2020, through pyautoattack) in the adversarial
benchmark, on models trained on real digits: at most PGD's robust accuracy on the same images,
the reference's checks as flags (the gradient-masked model), EOT for a noisy model, seeds,
the optional extra named when missing."""

from __future__ import annotations

import importlib.util
import math
import warnings

import pytest
import torch
from test_adversarial import (  # the adversarial tests' digits model and the masked model
    FAST_UNBOUNDED,
    TRAINING,
    RoundingFrontEnd,
    _submission,
)
from torch import nn

import bioprior
from bioprior.registry.cli.app import app

pytest.importorskip("pyautoattack", reason='needs the extra: pip install "bioprior[autoattack]"')

#: a reduced AutoAttack for the default suite: APGD-CE and APGD-T (3 targets), 25 iterations
QUICK_AA = {"version": "custom", "attacks": ["apgd-ce", "apgd-t"], "iterations": 25}
QUICK_AA |= {"target_classes": 3}


def _params(curves: dict, **more) -> dict:
    return {
        "images": 64,
        "curves": curves,
        "unbounded": FAST_UNBOUNDED,
        "transfer": False,
        "minimal_images": 0,
        **more,
    }


def test_autoattack_is_at_most_pgd_on_the_same_images(bioprior_home):
    eps = [0.0, 0.031, 0.06, 0.1]
    params = _params(
        {
            "pgd_linf": {"attack": {"name": "pgd_linf", "params": {"steps": 20}}, "epsilons": eps},
            "autoattack": {"attack": {"name": "autoattack", "params": QUICK_AA}, "epsilons": eps},
        },
        score_curve="autoattack",
        score_epsilon=0.06,
    )
    (row,) = bioprior.score(_submission("aa-digits", params), device="cpu")
    assert row["status"] == "ok", row["error"]
    m = row["metrics"]
    curves = m["modes"]["deterministic"]["curves"]
    aa, pgd = curves["autoattack"]["accuracy"], curves["pgd_linf"]["accuracy"]
    assert aa[0] == pgd[0] >= 0.8  # the same images, clean
    assert all(a <= p + 1e-9 for a, p in zip(aa, pgd)), (aa, pgd)
    assert aa[-1] < aa[0] - 0.3  # a real attack
    # the ball is respected: AutoAttack's accuracy at eps is computed on its own adversarials
    assert curves["autoattack"]["norm"] == "linf"
    report = curves["autoattack"]["attack_report"]
    assert report["version"] == "custom" and not any(report["flags"].values())
    assert m["score_attack"] == "autoattack" and m["threat_model"] == "Linf"
    assert m["score_epsilon_pixel"] == pytest.approx(0.06)
    assert m["number_forward_passes"] == 1
    assert row["score"] == pytest.approx(m["robust_accuracy"] / m["clean_accuracy"])
    assert not any(v for k, v in m["flags"].items() if k.startswith("autoattack_"))


def test_masked_model_is_flagged_by_autoattacks_checks(bioprior_home):
    torch.manual_seed(0)
    aa = {**QUICK_AA, "iterations": 10}  # the reference checks gradients with the DLR losses
    params = _params(
        {"autoattack": {"attack": {"name": "autoattack", "params": aa}, "epsilons": [0.0, 0.031]}}
    )
    params |= {"score_curve": "autoattack", "images": 48}
    (row,) = bioprior.score(
        RoundingFrontEnd(),
        benchmarks=[{"name": "adversarial", "params": params}],
        training={"dataset": "digits", "epochs": 10, "batch_size": 64, "lr": 0.05},
        name="masked",
        device="cpu",
    )
    assert row["status"] == "ok", row["error"]
    flags = row["metrics"]["flags"]
    assert flags["autoattack_zero_gradients"] and flags["vanishing_gradients"]
    report = row["metrics"]["modes"]["deterministic"]["curves"]["autoattack"]["attack_report"]
    assert any("zero gradient" in message for message in report["messages"])


def test_noisy_model_gets_the_rand_version_or_a_warning(bioprior_home):
    eps = [0.0, 0.05]
    noise = [{"name": "internal_noise", "params": {"sigma": 0.3, "at_inference": True}}]
    aa = {"version": "custom", "attacks": ["apgd-ce"], "iterations": 5}
    params = _params(
        {"autoattack": {"attack": {"name": "autoattack", "params": aa}, "epsilons": eps}},
        score_curve="autoattack",
        score_epsilon=0.05,
        images=24,
        eval_samples=2,
    )
    sub = _submission("aa-noisy", params, noise)
    sub["training"] = {**TRAINING, "epochs": 4}
    (row,) = bioprior.score(sub, device="cpu")
    assert row["status"] == "ok", row["error"]
    m = row["metrics"]
    assert m["score_mode"] == "stochastic" and m["number_forward_passes"] == 2
    stochastic = m["modes"]["stochastic"]["curves"]["autoattack"]["attack_report"]
    deterministic = m["modes"]["deterministic"]["curves"]["autoattack"]["attack_report"]
    assert stochastic["version"] == "rand" and deterministic["version"] == "custom"

    from bioprior.benchmarks.adversarial.attacks import AutoAttackParams
    from bioprior.benchmarks.adversarial.autoattack import AutoAttackFoolbox
    from bioprior.benchmarks.adversarial.eot import with_eot

    warn = AutoAttackFoolbox(AutoAttackParams(**aa, on_stochastic="warn"))
    assert with_eot(warn, 1) is warn
    eot = with_eot(warn, 8)
    assert eot.version == "custom" and eot.stochastic_without_rand
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    import foolbox as fb

    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    with pytest.warns(UserWarning, match="random at inference"):
        eot.run(fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilon=0.05)
    assert eot.pop_report()["flags"]["autoattack_stochastic_without_rand"]


def _linear(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


def test_same_seed_same_adversarials_and_the_budget_is_the_references():
    import foolbox as fb

    from bioprior.benchmarks.adversarial.attacks import AutoAttackParams
    from bioprior.benchmarks.adversarial.autoattack import AutoAttackFoolbox

    fmodel = fb.PyTorchModel(_linear(0), bounds=(0, 1))
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = fmodel(x).argmax(1)  # every image correct: every one is attacked
    attack = AutoAttackFoolbox(AutoAttackParams(**QUICK_AA))
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(attack.run(fmodel, x, y, epsilon=0.05))
    assert torch.equal(runs[0], runs[1])
    assert (runs[0] - x).abs().max() <= 0.05 + 1e-6 and 0 <= runs[0].min() <= runs[0].max() <= 1
    # the standard version keeps the reference's budget (RobustBench's evaluation)
    aa = AutoAttackFoolbox(AutoAttackParams())._build(_linear(0), 8 / 255, 0, "cpu")
    assert aa.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert (aa.apgd.n_iter, aa.apgd.n_restarts, aa.apgd_targeted.n_target_classes) == (100, 1, 9)
    assert (aa.fab.n_target_classes, aa.square.n_queries) == (9, 5000)


def test_dynamic_check_counts_are_reset_between_models():
    """pyautoattack's dynamic-defense check keeps its counts in a module dict: a shim resets
    them, so a plain model after a dynamic one is not flagged."""
    import foolbox as fb

    from bioprior.benchmarks.adversarial.attacks import AutoAttackParams
    from bioprior.benchmarks.adversarial.autoattack import AutoAttackFoolbox

    class GradientInForward(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _linear(0)

        def forward(self, x):
            with torch.enable_grad():
                probe = x.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self.net(probe).sum(), probe)
            return self.net(x + 0 * g.detach())

    attack = AutoAttackFoolbox(AutoAttackParams(**{**QUICK_AA, "iterations": 2}))
    x = torch.rand(8, 1, 8, 8)
    for model, dynamic in [(GradientInForward().eval(), True), (_linear(1), False)]:
        fmodel = fb.PyTorchModel(model, bounds=(0, 1))
        attack.run(fmodel, x, fmodel(x).argmax(1), epsilon=0.01)
        assert attack.pop_report()["flags"]["autoattack_dynamic"] is dynamic


def test_check_messages_become_flags():
    from bioprior.benchmarks.adversarial.autoattack import ALL_FLAGS, flags_of

    flags = flags_of(
        [
            (
                "it seems that the output is a probability distribution, please be sure that "
                "the logits are used! See flags_doc.md for details."
            ),
            "Square Attack has decreased the robust accuracy of 1.20%.",
        ]
    )
    assert set(flags) == set(ALL_FLAGS)
    assert {k for k, v in flags.items() if v} == {
        "autoattack_softmax_output",
        "autoattack_square_beats_white_box",
    }


def _validate(path) -> tuple[int, str]:
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["validate", str(path)], catch_exceptions=False)
    return result.exit_code, result.output.strip()


def test_parameters_follow_the_reference_versions(tmp_path):
    from pydantic import ValidationError

    from bioprior.benchmarks.adversarial.attacks import AutoAttackParams

    with pytest.raises(ValidationError, match="use version: custom"):
        AutoAttackParams(attacks=["apgd-ce"])
    with pytest.raises(ValidationError, match="iterations"):
        AutoAttackParams(version="standard", iterations=10)
    with pytest.raises(ValidationError, match="needs `attacks`"):
        AutoAttackParams(version="custom")
    sub = tmp_path / "aa.yaml"
    sub.write_text(
        "name: aa\nmodel: small_alexnet\ntraining: {dataset: digits}\nbenchmarks:\n"
        "  - name: adversarial\n    params:\n      score_curve: aa\n      curves:\n"
        "        aa: {attack: {name: autoattack, params: {version: plus, square_queries: 10}}, "
        "epsilons: [0.0, 0.031]}\n"
    )
    code, err = _validate(sub)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "aa.yaml" in err and "square_queries" in err


def test_missing_extra_is_named_before_training(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pyautoattack" else real(name, *a),
    )
    sub = tmp_path / "aa.yaml"
    sub.write_text(
        "name: aa\nmodel: small_alexnet\ntraining: {dataset: digits}\nbenchmarks:\n"
        "  - name: adversarial\n    params:\n      score_curve: aa\n      curves:\n"
        "        aa: {attack: {name: autoattack}, epsilons: [0.0, 0.031]}\n"
    )
    code, err = _validate(sub)
    assert code == 2, err
    assert "aa.yaml" in err and 'pip install "bioprior[autoattack]"' in err
    assert len(err.splitlines()) == 1


@pytest.mark.slow
def test_standard_autoattack_on_digits(bioprior_home):
    """The reference's standard version (APGD-CE, APGD-T, FAB-T, Square 5,000 queries), as
    RobustBench runs it, at most PGD's robust accuracy."""
    eps = [0.0, 0.06]
    params = _params(
        {
            "pgd_linf": {"attack": {"name": "pgd_linf", "params": {"steps": 20}}, "epsilons": eps},
            "autoattack": {"attack": {"name": "autoattack"}, "epsilons": eps},
        },
        score_curve="autoattack",
        score_epsilon=0.06,
        images=100,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (row,) = bioprior.score(_submission("aa-standard", params), device="cpu")
    assert row["status"] == "ok", row["error"]
    curves = row["metrics"]["modes"]["deterministic"]["curves"]
    aa, pgd = curves["autoattack"]["accuracy"], curves["pgd_linf"]["accuracy"]
    assert aa[-1] <= pgd[-1] and not math.isclose(aa[-1], aa[0])
    assert curves["autoattack"]["attack_report"]["version"] == "standard"


@pytest.mark.slow
def test_robustbench_digits_twin_end_to_end(tmp_path):
    """The shipped digits twin of RobustBench's protocol, scored and exported as a user runs it."""
    import json

    from conftest import ROOT, run_cli

    env = {"BIOPRIOR_HOME": str(tmp_path / "home")}
    scored = run_cli("score", str(ROOT / "submissions/robustbench-digits-linf.yaml"), env=env)
    assert scored.returncode == 0, scored.stderr[-2000:]
    out = tmp_path / "model_info"
    exported = run_cli("results", "--format", "robustbench", "-o", str(out), env=env)
    assert exported.returncode == 0, exported.stderr[-2000:]
    infos = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert len(infos) == 2
    for info in infos:
        assert info["eps"] == "8/255" and info["threat_model"] == "Linf"
        assert float(info["autoattack_acc"]) < float(info["clean_acc"])
        assert 0 < float(info["corruptions_acc"]) <= 100 and info["unreliable"] is False
