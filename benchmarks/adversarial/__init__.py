"""Adversarial robustness: fixed-epsilon accuracy curves, black-box transfer and minimal
perturbations, with sanity checks for stochastic and gradient-masked models.

Papers:

* evanson (Methods "Adversarial Attacks"; Table 2, Table 3, Fig. 4D): FGSM over an epsilon grid
  (0.05 to 1), white-box PGD Linf (eps 0.031, 20 steps, step 0.003) and black-box PGD computed on
  the "Conv2D model" (4 conv, 2 max-pool, 2 linear; registered as model ``cw_conv2d``) trained on
  the same data with the same recipe, then applied to the scored model.
* li2019 (Sec. 4.2 and supplement, following Brendel et al. 2019): for each test image the
  smallest adversarial perturbation found across attacks (C&W, DDN, FMN, PGD with a bisection
  on epsilon, optionally Brendel-Bethge); the median over images is the robustness (li2019
  reports the median in Sec. 4.2; the supplement says "average": both are stored).
* Athalye et al. 2018 (EOT) and Carlini et al. 2019 / Croce & Hein 2020 (AutoAttack): sanity
  checks, stored as ``flags`` with the score; AutoAttack itself is the ``autoattack`` attack
  (RobustBench's evaluation: ``submissions/robustbench-cifar10-linf.yaml``).

Input space (documented choice): images in [0, 1] pixel units; the trained model standardizes
internally (``bioprior.registry.engine.trainer.Normalized``), so foolbox runs with ``bounds=(0, 1)``
and epsilons are pixel units by default (``epsilon_space: pixel``). evanson trains on
normalized images and does not say in which space its epsilons live (Methods, "FGSM Attacks",
follows the PyTorch FGSM tutorial, which attacks [0, 1] images); to read them on normalized
inputs instead, ``epsilon_space: normalized`` converts every epsilon (curves, score,
transfer, unbounded) is converted as ``eps_pixel = eps_normalized * std`` with ``std`` the model's
input standard deviation (mean over channels for multi-channel images; exact for grayscale).
Both the given and the pixel epsilons are stored. Note that 0.031 is also 8/255, the TRADES /
Madry convention in pixel units, which is the default here.

Robust accuracy at epsilon counts an image as robust only if no attack of that curve at any
epsilon' <= epsilon fooled it (an adversarial in a smaller ball lies in the larger one), so
stored curves are non-increasing; the per-epsilon ("raw") accuracies are stored too, and a raw
curve that rises with epsilon is flagged (``non_monotonic``).

Stochastic models: see :mod:`bioprior.benchmarks.adversarial.eot` for the contract (``at_inference``).
Every metric is reported per mode: ``deterministic`` (stochastic modules switched off, on a copy)
and, when the model's outputs vary between identical calls, ``stochastic`` (attacks with EOT
over ``eot_samples`` passes; accuracies averaged over ``eval_samples`` noise draws). In the
stochastic mode ``pgd_single_sample`` is the same PGD without EOT, for comparison.

Score (documented choice)::

    score = clip(robust_acc(score_curve, score_epsilon) / clean_acc, 0, 1)

in the stochastic mode when the model is stochastic, else the deterministic one (0 when clean
accuracy is 0). Defaults: PGD Linf at eps 0.031 (evanson Table 3).

Flags (``metrics.flags``, each also per mode): ``non_monotonic``, ``unbounded_not_zero``
(accuracy under the unbounded attack above ``unbounded_max_accuracy``),
``black_box_beats_white_box``, ``single_step_beats_iterative`` (FGSM beats PGD at the score
epsilon), ``vanishing_gradients`` (input gradient of the logit margin zero for more than
``zero_gradient_fraction`` of the images), ``stochastic_outputs`` and
``stochastic_without_switch`` (still random with every ``at_inference`` off); an attack's own
checks join them: AutoAttack's (``autoattack_*``: randomized, dynamic, softmax output, zero
gradients, Square beating the white-box attacks, target classes) when a curve runs
``autoattack``.

Also stored for RobustBench's format: ``score_attack``, ``threat_model`` (``Linf``, ``L2``, ...),
``score_epsilon_pixel`` and ``number_forward_passes`` (forward passes per prediction: 1, or
``eval_samples`` for a stochastic model).

A stopped run resumes a long evaluation from the job's journal (``ctx.journal``: each attacked
batch, each attack's per-image results at an epsilon) to the numbers of an uninterrupted one
(docs/reproducibility.md, "Journals"); an attack with its own report (AutoAttack) runs whole.

Deviations: evaluated on the first ``images`` test images (not 10,000); evanson repeats attacks
10-100 times and averages, here one seeded run (noise averaged over ``eval_samples`` draws);
li2019 searched attack hyperparameters and ran each 5 times, here one documented budget per
attack (``bioprior plugins --kind attack``); Brendel-Bethge is off by default (numba compile).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from bioprior.plugin import Benchmark, BenchmarkResult, PluginParams, Work, hookimpl

CITATION = (
    "Evanson et al., flexible layer (FGSM, PGD white/black-box); Li et al. (2019), NeurIPS "
    "(minimal perturbations, Brendel et al. 2019 scheme); Athalye et al. (2018), ICML (EOT); "
    "Carlini et al. (2019) On evaluating adversarial robustness"
)


class AttackRef(PluginParams):
    plugin_kind: ClassVar[str] = "attack"  # resolved and validated by `bioprior validate`
    name: str = Field(default="pgd_linf", description="A registered attack (kind 'attack').")
    params: dict[str, Any] = Field(default_factory=dict, description="The attack's parameters.")


class Curve(PluginParams):
    attack: AttackRef = Field(default_factory=AttackRef, description="Fixed-epsilon attack.")
    epsilons: list[float] = Field(
        default=[0.0, 0.031], min_length=1, description="Epsilons (in epsilon_space units)."
    )

    @field_validator("epsilons")
    @classmethod
    def _sorted(cls, v: list[float]) -> list[float]:
        if any(e < 0 for e in v) or v != sorted(v):
            raise ValueError("epsilons must be non-negative and ascending")
        return v


# Defaults are plain JSON (validated through validate_default) so `bioprior plugins --json` can
# print them.
def _default_curves() -> dict[str, Any]:
    return {
        "fgsm": {
            "attack": {"name": "fgsm", "params": {}},
            "epsilons": [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0],  # evanson: 0.05 to 1
        },
        "pgd_linf": {
            "attack": {"name": "pgd_linf", "params": {}},
            "epsilons": [0.0, 0.01, 0.02, 0.031, 0.05, 0.1],  # evanson Table 3: 0.031
        },
        "pgd_l2": {
            "attack": {"name": "pgd_l2", "params": {}},
            "epsilons": [0.0, 0.25, 0.5, 1.0, 2.0],
        },
    }


def _default_minimal() -> list[dict[str, Any]]:
    names = ["pgd_linf_search", "pgd_l2_search", "cw_l2", "ddn"]
    names += ["fmn_linf", "fmn_l2", "fmn_l1", "fmn_l0"]
    return [{"name": n, "params": {}} for n in names]


class AdversarialParams(PluginParams):
    images: int = Field(
        default=200, ge=1, le=100_000, description="First N test images attacked (evanson: all)."
    )
    epsilon_space: Literal["pixel", "normalized"] = Field(
        default="pixel",
        description="Units of every epsilon: 'pixel' ([0, 1] images) or 'normalized' "
        "(evanson's; eps_pixel = eps * input std).",
    )
    curves: dict[str, Curve] = Field(
        default_factory=_default_curves,
        validate_default=True,
        description="Fixed-epsilon accuracy curves by label.",
    )
    score_curve: str = Field(default="pgd_linf", description="Curve whose accuracy is the score.")
    score_epsilon: float = Field(
        default=0.031, ge=0, description="Epsilon of the score (evanson Table 3: 0.031)."
    )
    unbounded: AttackRef = Field(
        default_factory=lambda: AttackRef(
            name="pgd_linf", params={"steps": 50, "rel_stepsize": 0.05}
        ),
        description="Sanity check: this attack at unbounded_epsilon must reach ~0 accuracy.",
    )
    unbounded_epsilon: float = Field(
        default=1.0, gt=0, description="Epsilon of the unbounded attack (Linf 1 = whole box)."
    )
    unbounded_max_accuracy: float = Field(
        default=0.05, ge=0, le=1, description="Flag unbounded_not_zero above this accuracy."
    )
    transfer: bool = Field(
        default=True, description="Black-box transfer from a surrogate model (evanson Table 3)."
    )
    transfer_attack: AttackRef = Field(
        default_factory=lambda: AttackRef(name="pgd_linf"),
        description="Attack run on the surrogate (at the score curve's epsilons).",
    )
    surrogate_model: str = Field(
        json_schema_extra={"plugin_kind": "model", "params_field": "surrogate_params"},
        default="cw_conv2d",
        description="Surrogate model (evanson: the 'Conv2D model').",
    )
    surrogate_params: dict[str, Any] = Field(
        default_factory=dict,
        description="Surrogate parameters (geometry is taken from the scored model's input).",
    )
    eot_samples: int = Field(
        default=8, ge=1, le=1000, description="EOT: gradient samples per step (stochastic mode)."
    )
    eval_samples: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="Noise draws averaged when scoring a stochastic model.",
    )
    stochastic_repeats: int = Field(
        default=3, ge=2, le=100, description="Identical forward passes compared to detect noise."
    )
    minimal_attacks: list[AttackRef] = Field(
        default_factory=_default_minimal,
        validate_default=True,
        description="Minimization attacks for the smallest perturbation per image (li2019).",
    )
    minimal_images: int = Field(
        default=100, ge=0, le=100_000, description="Images for minimal perturbations (0: skip)."
    )
    monotonic_tolerance: float = Field(
        default=0.02, ge=0, le=1, description="Rise of a raw curve tolerated before flagging."
    )
    black_box_tolerance: float = Field(
        default=0.02, ge=0, le=1, description="Margin by which black-box may beat white-box."
    )
    zero_gradient_fraction: float = Field(
        default=0.1, ge=0, le=1, description="Flag vanishing_gradients above this fraction."
    )
    batch_size: int = Field(default=256, ge=1, description="Images per attack batch.")

    @model_validator(mode="after")
    def _score_point(self) -> AdversarialParams:
        if self.score_curve not in self.curves:
            raise ValueError(f"score_curve {self.score_curve!r} is not one of the curves")
        if self.score_epsilon not in self.curves[self.score_curve].epsilons:
            raise ValueError(f"score_epsilon {self.score_epsilon} is not in that curve's epsilons")
        return self


def surrogate_training(needs, params):
    """The black-box surrogate, unconstrained, at the scored model's input geometry (a ``None``
    geometry is filled from the data at build, as for the scored model)."""
    own = needs.job.training.model.params
    geometry = {k: getattr(own, k, None) for k in ("in_channels", "input_size")}
    surrogate_params = {
        **params.surrogate_params,
        **{k: v for k, v in geometry.items() if v is not None},
    }
    model = needs.component("model", params.surrogate_model, surrogate_params)
    return needs.trained(model=model, constraints=())


def gradient_passes(attack: Any) -> int:
    """Input gradients an attack takes per image and epsilon, from its parsed parameters: its
    own ``gradient_passes()`` where it defines one, else its ``steps`` (or ``iterations``) times
    its ``search_steps`` and ``binary_search_steps``, else 1 (a single-step attack)."""
    own = getattr(attack, "gradient_passes", None)
    if callable(own):
        return int(own())
    n = getattr(attack, "steps", None) or getattr(attack, "iterations", None) or 1
    for field in ("search_steps", "binary_search_steps"):
        n *= getattr(attack, field, None) or 1
    return int(n)


class Adversarial(Benchmark):
    def trainings(self, needs):
        own = [needs.trained()]
        return own + [surrogate_training(needs, self.params)] if self.params.transfer else own

    def work(self, needs) -> Work:
        """The passes of ``run``: on a deterministic model, the deterministic mode
        (:meth:`_mode_passes`), plus the transfer attack's steps (counted on the scored model: a
        floor where the surrogate is the larger network) and forwards; a model random at
        inference (``Work.stochastic``) adds the stochastic mode, its gradients averaged over
        ``eot_samples`` passes and its accuracies over ``eval_samples`` draws."""
        p = self.params

        def attack(ref: AttackRef) -> Any:
            return needs.component("attack", ref.name, dict(ref.params)).params

        forward, gradient = self._mode_passes(attack, eot=1, samples=1)
        if p.transfer:
            eps = p.curves[p.score_curve].epsilons
            gradient += gradient_passes(attack(p.transfer_attack)) * sum(e > 0 for e in eps)
            forward += len(eps) + 1  # the surrogate's own accuracies
            forward += len(eps)  # the scored model on the surrogate's adversarials
        f, g = self._mode_passes(attack, eot=p.eot_samples, samples=p.eval_samples)
        if p.transfer:
            f += len(p.curves[p.score_curve].epsilons) * p.eval_samples
        stochastic = Work(forward=forward + f, gradient=gradient + g, images=p.images)
        return Work(forward=forward, gradient=gradient, images=p.images, stochastic=stochastic)

    def _mode_passes(self, attack, eot: int, samples: int) -> tuple[float, float]:
        """(forward, gradient) passes per image of one mode (``run._attack_mode``): the clean
        accuracy; per curve one gradient per nonzero epsilon and attack step (one per curve for
        a single-step attack without random start on a deterministic model: its gradient
        serves every epsilon) and an accuracy per epsilon; FGSM at the score epsilon (and, with
        EOT, the score attack without it); the unbounded attack; the margin gradient; the
        minimization attacks on their share of the images. Each gradient is ``eot`` passes,
        each accuracy ``samples``."""
        p = self.params
        forward, gradient = 1.0, 0.0
        for curve in p.curves.values():
            a, nonzero = attack(curve.attack), sum(e > 0 for e in curve.epsilons)
            steps = gradient_passes(a)
            shared = eot == 1 and steps == 1 and not getattr(a, "random_start", False)
            gradient += (1 if nonzero else 0) if shared else steps * nonzero * eot
            forward += len(curve.epsilons)
        if p.score_epsilon > 0:
            gradient, forward = gradient + eot, forward + 1
            if eot > 1:
                score = attack(p.curves[p.score_curve].attack)
                gradient, forward = gradient + gradient_passes(score), forward + 1
        gradient += gradient_passes(attack(p.unbounded)) * eot + 1  # unbounded; the margin
        forward += 1  # the unbounded attack's accuracy
        if p.minimal_images:
            share = min(1.0, p.minimal_images / p.images)
            minimal = sum(gradient_passes(attack(r)) for r in p.minimal_attacks)
            gradient += share * minimal * eot
            forward += share * (1 + len(p.minimal_attacks))
        return forward * samples, gradient

    def run(self, ctx) -> BenchmarkResult:
        from bioprior.benchmarks.adversarial.run import run_adversarial

        return run_adversarial(ctx, self.params)

    def preview(self, images, seed: int):
        """Random corners of the Linf ball at the score curve's epsilons (pixel units), i.e. the
        size of the perturbations allowed; adversarial ones need a model."""
        import torch

        gen = torch.Generator().manual_seed(seed)
        sign = torch.randint(0, 2, images.shape, generator=gen).float() * 2 - 1
        out = {}
        for eps in self.params.curves[self.params.score_curve].epsilons:
            out[f"linf {eps:g}"] = (images + eps * sign).clamp(0, 1)
        return out


@hookimpl
def register_benchmarks(register):
    register(
        name="adversarial",
        factory=Adversarial,
        params=AdversarialParams,
        version="1",
        citation=CITATION,
        description="FGSM/PGD curves, black-box transfer, minimal perturbations; EOT and flags.",
        extra={"score": "accuracy at score_curve, score_epsilon / clean accuracy, in [0, 1]"},
    )
