"""Implementation of the ``adversarial`` benchmark (see :mod:`bioprior.benchmarks.adversarial`
for the protocol, the score and the flags). Imported only inside ``run()``."""

from __future__ import annotations

import itertools
import math
import statistics
import warnings
import zlib
from dataclasses import dataclass
from typing import Any

import foolbox as fb
import torch
from torch import nn

from bioprior.benchmarks.adversarial import AttackRef, surrogate_training
from bioprior.benchmarks.adversarial.eot import (
    ExpectedLogits,
    deterministic_copy,
    is_stochastic,
    with_eot,
)
from bioprior.benchmarks.adversarial.foolbox_attacks import (
    NORMS,
    AttackPlugin,
    clipped_adversarials,
    draws_random_numbers,
    gradient_directions,
    input_gradients_only,
    shares_gradient,
    step_along,
)
from bioprior.plugin import NO_JOURNAL, BenchmarkResult, seeded, to_float


@dataclass
class Mode:
    """A model as attacked: ``module`` is what the attacks see, ``samples`` the EOT samples."""

    name: str
    module: nn.Module
    stochastic: bool
    eot_samples: int
    eval_samples: int


#: bioprior's norm names -> RobustBench's threat-model names
THREAT_MODELS = {"linf": "Linf", "l2": "L2", "l1": "L1", "l0": "L0"}


def _seed(base: int, *labels: str) -> int:
    return (base * 1_000_003 + zlib.crc32("/".join(labels).encode())) % (2**31)


def resolve_attack(ctx, ref) -> AttackPlugin:
    """An attack plugin by name + params, validated through the registry (close-match errors)."""
    component = ctx.component("attack", ref.name, dict(ref.params))
    plugin = component.entry.build(component.params)
    if not isinstance(plugin, AttackPlugin):
        raise TypeError(f"attack {ref.name!r}: factory must return an AttackPlugin")
    return plugin


# -- evaluation ---------------------------------------------------------------------------------
@torch.no_grad()
def correct_fraction(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int = 1, batch_size: int = 1024
) -> torch.Tensor:
    """Per image, the fraction of ``draws`` forward passes that classify it correctly."""
    out = torch.zeros(len(x), device=x.device)
    for _ in range(draws):
        for i in range(0, len(x), batch_size):
            logits = module(x[i : i + batch_size])
            out[i : i + batch_size] += (logits.argmax(1) == y[i : i + batch_size]).float()
    return out / draws


def _batched_attack(
    attack, fmodel, x, y, epsilon, batch_size: int, journal=NO_JOURNAL, label: str = ""
) -> torch.Tensor:
    """The clipped adversarials of foolbox's ``attack(fmodel, xb, yb, epsilons=epsilon)``,
    batch by batch: the same images, computed without the success check
    (:func:`clipped_adversarials`) and without parameter gradients
    (:func:`input_gradients_only`); each batch a unit of the job's ``journal`` (``label``)."""
    random_model = len(x) > 0 and draws_random_numbers(fmodel, x[:1])
    advs = []
    with input_gradients_only(fmodel):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]

            def batch(xb=xb, yb=yb) -> dict[str, torch.Tensor]:
                adv = clipped_adversarials(attack, fmodel, xb, yb, epsilon, random_model)
                return {"adv": adv.detach()}

            advs.append(journal.cached(f"{label}/images {i}", batch)["adv"])
    return torch.cat(advs)


def fixed_epsilon_curve(
    mode: Mode,
    plugin: AttackPlugin,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilons_pixel: list[float],
    seed: int,
    batch_size: int = 256,
    eot: bool = True,
    journal=NO_JOURNAL,
    label: str = "",
) -> dict[str, Any]:
    """Robust accuracy per epsilon: ``accuracy`` (an image counts as robust at eps only if no
    epsilon' <= eps fooled it: non-increasing) and ``accuracy_raw`` (per epsilon). Each
    epsilon's per-image results are a unit of the job's ``journal`` (``label``), its batches
    too while it runs."""
    if plugin.minimal:
        raise ValueError(
            "a fixed-epsilon curve needs a fixed-epsilon attack (not a minimization one)"
        )
    attack = with_eot(plugin.attack, mode.eot_samples if eot else 1)
    if callable(getattr(attack, "pop_report", None)):
        journal = NO_JOURNAL  # its report (AutoAttack's checks) comes from running it
    fmodel = fb.PyTorchModel(mode.module, bounds=(0, 1), device=x.device)
    directions = None  # FGSM / FGM on a deterministic model: one gradient serves every epsilon
    if len(x) and shares_gradient(attack, draws_random_numbers(fmodel, x[:1])):
        directions = gradient_directions(attack, fmodel, x, y, batch_size)
    raw, envelope = [], []
    running = None
    for k, eps in enumerate(epsilons_pixel):
        unit = f"{label}/epsilon {k}"

        def at_epsilon(k=k, eps=eps, unit=unit) -> dict[str, torch.Tensor]:
            with seeded(_seed(seed, str(k), repr(eps)), x.device):
                if eps == 0:
                    adv = x
                elif directions is not None:
                    adv = step_along(attack, fmodel, x, directions, eps)
                else:
                    adv = _batched_attack(attack, fmodel, x, y, eps, batch_size, journal, unit)
                return {"correct": correct_fraction(mode.module, adv, y, mode.eval_samples)}

        c = journal.cached(unit, at_epsilon)["correct"]
        running = c if running is None else torch.minimum(running, c)
        raw.append(c.mean().item())
        envelope.append(running.mean().item())
    out = {"norm": plugin.norm, "accuracy": envelope, "accuracy_raw": raw}
    if callable(getattr(attack, "pop_report", None)):  # an attack with its own checks
        out["attack_report"] = attack.pop_report()
    return out


def margin_gradient_norms(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L2 norm, per image, of the input gradient of the logit margin z_y - max_{j != y} z_j
    (not of the cross-entropy, whose gradient vanishes on saturated softmax outputs)."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        logits = module(x)
        true = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.masked_fill(
            torch.nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf")
        ).amax(1)
        (grad,) = torch.autograd.grad((true - other).sum(), x)
    return grad.flatten(1).norm(dim=1)


def distances(x: torch.Tensor, adv: torch.Tensor) -> dict[str, torch.Tensor]:
    d = (adv - x).flatten(1)
    return {
        "linf": d.abs().amax(1),
        "l2": d.norm(dim=1),
        "l1": d.abs().sum(1),
        "l0": (d != 0).float().sum(1),
    }


def minimal_perturbations(
    mode: Mode,
    plugins: dict[str, AttackPlugin],
    x: torch.Tensor,
    y: torch.Tensor,
    seed: int,
    batch_size: int = 256,
    journal=NO_JOURNAL,
    label: str = "minimal",
) -> dict[str, Any]:
    """li2019 / Brendel et al. 2019: per image, the smallest perturbation (in each norm) among
    the adversarials found by all attacks; median (and mean) over images. An image misclassified
    without perturbation has distance 0; one no attack flipped has distance inf (stored as None,
    counted in ``failed``). A stochastic model is attacked through its expected logits over
    ``eot_samples`` passes; an adversarial counts if most of ``eval_samples`` draws misclassify it.
    """
    target = ExpectedLogits(mode.module, mode.eot_samples) if mode.stochastic else mode.module
    fmodel = fb.PyTorchModel(target, bounds=(0, 1), device=x.device)
    n = len(x)
    best = {norm: torch.full((n,), math.inf, device=x.device) for norm in NORMS}
    with seeded(_seed(seed, "clean"), x.device):
        clean_wrong = correct_fraction(mode.module, x, y, mode.eval_samples) < 0.5
    for norm in NORMS:
        best[norm][clean_wrong] = 0.0
    per_attack: dict[str, Any] = {}
    for name, plugin in plugins.items():

        def attacked(name=name, plugin=plugin) -> dict[str, torch.Tensor]:
            with seeded(_seed(seed, name), x.device), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                unit = f"{label}/{name}"
                advs = _batched_attack(plugin.attack, fmodel, x, y, None, batch_size, journal, unit)
                return {
                    "adv": advs,
                    "ok": correct_fraction(mode.module, advs, y, mode.eval_samples),
                }

        found = journal.cached(f"{label}/{name}", attacked)
        advs, ok = found["adv"], found["ok"] < 0.5
        dist = distances(x, advs)
        own = torch.where(ok, dist[plugin.norm], torch.full_like(dist[plugin.norm], math.inf))
        own[clean_wrong] = 0.0
        per_attack[name] = {
            "norm": plugin.norm,
            "success_rate": ok.float().mean().item(),
            "median": _finite(own.median().item()),
        }
        for norm in NORMS:
            cand = torch.where(ok, dist[norm], torch.full_like(dist[norm], math.inf))
            best[norm] = torch.minimum(best[norm], cand)
    summary = {}
    for norm in NORMS:
        values = best[norm].tolist()
        finite = [v for v in values if math.isfinite(v)]
        summary[norm] = {
            "median": _finite(statistics.median(values)) if values else None,
            "mean": statistics.fmean(finite) if len(finite) == len(values) and values else None,
            "failed": len(values) - len(finite),
        }
    return {"images": n, "norms": summary, "attacks": per_attack}


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


# -- the benchmark ------------------------------------------------------------------------------
def _modes(module: nn.Module, x: torch.Tensor, params, seed: int) -> tuple[list[Mode], dict]:
    probe = x[:64]
    with seeded(_seed(seed, "probe"), x.device):
        stochastic = is_stochastic(module, probe, params.stochastic_repeats)
        det, switched = deterministic_copy(module)
        det_stochastic = is_stochastic(det, probe, params.stochastic_repeats)
    modes = [
        Mode(
            "deterministic",
            det,
            det_stochastic,
            params.eot_samples if det_stochastic else 1,
            params.eval_samples if det_stochastic else 1,
        )
    ]
    if stochastic:
        modes.append(Mode("stochastic", module, True, params.eot_samples, params.eval_samples))
    info = {
        "stochastic": stochastic,
        "switches_turned_off": switched,
        "stochastic_without_switch": det_stochastic,
    }
    return modes, info


def _index(values: list[float], target: float) -> int | None:
    for i, v in enumerate(values):
        if math.isclose(v, target, rel_tol=1e-9, abs_tol=1e-12):
            return i
    return None


@dataclass
class Setup:
    """What every mode is attacked with: the images, the epsilon scale and the attacks."""

    x: torch.Tensor
    y: torch.Tensor
    scale: float  # epsilon in the benchmark's space -> pixel units
    curve_attacks: dict[str, AttackPlugin]
    unbounded: AttackPlugin
    minimal: dict[str, AttackPlugin]
    score_plugin: AttackPlugin
    fgsm: AttackPlugin
    journal: Any = NO_JOURNAL  # the job's (:mod:`bioprior.registry.engine.journal`)

    def px(self, eps: float) -> float:
        return eps * self.scale


def _setup(ctx, params, module: nn.Module, data) -> Setup:
    n = min(params.images, len(data.test_x))
    std = getattr(module, "input_std", None)
    scale = float(std.mean()) if params.epsilon_space == "normalized" and std is not None else 1.0
    curve_attacks = {label: resolve_attack(ctx, c.attack) for label, c in params.curves.items()}
    return Setup(
        x=to_float(data.test_x[:n]).contiguous(),
        y=data.test_y[:n],
        scale=scale,
        curve_attacks=curve_attacks,
        unbounded=resolve_attack(ctx, params.unbounded),
        minimal={ref.name: resolve_attack(ctx, ref) for ref in params.minimal_attacks},
        score_plugin=curve_attacks[params.score_curve],
        fgsm=resolve_attack(ctx, AttackRef(name="fgsm")),
        journal=ctx.journal,
    )


def _transfer_adversarials(
    ctx, params, s: Setup, data
) -> tuple[dict[float, torch.Tensor], dict[str, Any]]:
    """Black-box adversarials at the score curve's epsilons, computed once on the
    (deterministic) surrogate, and the surrogate's own accuracies."""
    surrogate = surrogate_training(ctx, params)
    sur_module, _ = deterministic_copy(surrogate.module)
    sur_plugin = resolve_attack(ctx, params.transfer_attack)
    fmodel = fb.PyTorchModel(sur_module, bounds=(0, 1), device=s.x.device)
    eps_list = params.curves[params.score_curve].epsilons
    sur_clean = correct_fraction(sur_module, s.x, s.y)
    advs: dict[float, torch.Tensor] = {}
    for k, eps in enumerate(eps_list):
        with seeded(_seed(ctx.seed, "transfer", str(k)), s.x.device):
            advs[eps] = (
                s.x
                if eps == 0
                else _batched_attack(
                    sur_plugin.attack,
                    fmodel,
                    s.x,
                    s.y,
                    s.px(eps),
                    params.batch_size,
                    s.journal,
                    f"transfer/epsilon {k}",
                )
            )
    surrogate_metrics = {
        "model": params.surrogate_model,
        "clean_accuracy": sur_clean.mean().item(),
        "white_box_accuracy": [
            correct_fraction(sur_module, advs[e], s.y).mean().item() for e in eps_list
        ],
    }
    return advs, surrogate_metrics


def _curves(mode: Mode, params, s: Setup, seed: int) -> dict[str, dict[str, Any]]:
    """Every fixed-epsilon accuracy curve of ``params.curves`` on ``mode``."""
    curves = {}
    for label, spec in params.curves.items():
        curve = fixed_epsilon_curve(
            mode,
            s.curve_attacks[label],
            s.x,
            s.y,
            [s.px(e) for e in spec.epsilons],
            _seed(seed, label),
            params.batch_size,
            journal=s.journal,
            label=f"{mode.name}/curve {label}",
        )
        curves[label] = {
            "attack": spec.attack.name,
            "epsilons": list(spec.epsilons),
            "epsilons_pixel": [s.px(e) for e in spec.epsilons],
            **curve,
        }
    return curves


def _single_step_check(mode: Mode, params, s: Setup, seed: int, robust: float, out, flags):
    """FGSM vs the iterative score attack at the score epsilon (Carlini et al. 2019), and the
    score attack without EOT on a stochastic model."""
    score_eps = params.score_epsilon
    step = fixed_epsilon_curve(
        mode,
        s.fgsm,
        s.x,
        s.y,
        [s.px(score_eps)],
        _seed(seed, "fgsm@score"),
        params.batch_size,
        journal=s.journal,
        label=f"{mode.name}/check fgsm@score",
    )
    out["fgsm_at_score_epsilon"] = step["accuracy"][0]
    flags["single_step_beats_iterative"] = step["accuracy"][0] < robust - params.black_box_tolerance
    if mode.stochastic and mode.eot_samples > 1:
        single = fixed_epsilon_curve(
            mode,
            s.score_plugin,
            s.x,
            s.y,
            [s.px(score_eps)],
            _seed(seed, params.score_curve),  # same seed as the EOT run
            params.batch_size,
            eot=False,
            journal=s.journal,
            label=f"{mode.name}/check without eot",
        )
        out["single_sample_robust_accuracy"] = single["accuracy"][0]


def _unbounded_check(mode: Mode, params, s: Setup, seed: int, out, flags) -> None:
    """An unbounded attack must bring the accuracy to about 0."""
    ub = fixed_epsilon_curve(
        mode,
        s.unbounded,
        s.x,
        s.y,
        [s.px(params.unbounded_epsilon)],
        _seed(seed, "unbounded"),
        params.batch_size,
        journal=s.journal,
        label=f"{mode.name}/check unbounded",
    )
    out["unbounded_accuracy"] = ub["accuracy"][0]
    flags["unbounded_not_zero"] = ub["accuracy"][0] > params.unbounded_max_accuracy


def _gradient_check(mode: Mode, params, s: Setup, seed: int, out, flags) -> None:
    """Vanishing or zero input gradients of the margin."""
    with seeded(_seed(seed, "gradients"), s.x.device):
        norms = margin_gradient_norms(mode.module, s.x, s.y)
    zero = (norms <= 1e-12).float().mean().item()
    out["zero_gradient_fraction"] = zero
    out["median_gradient_norm"] = norms.median().item()
    flags["vanishing_gradients"] = zero > params.zero_gradient_fraction


def _transfer_check(mode: Mode, params, s: Setup, seed: int, advs, white, out, flags) -> None:
    """Accuracy on the surrogate's adversarials (a running minimum over epsilons); a black-box
    attack stronger than the white-box one is a flag."""
    eps_list = params.curves[params.score_curve].epsilons
    running, acc = None, []
    for k, eps in enumerate(eps_list):
        with seeded(_seed(seed, "transfer", str(k)), s.x.device):
            c = correct_fraction(mode.module, advs[eps], s.y, mode.eval_samples)
        running = c if running is None else torch.minimum(running, c)
        acc.append(running.mean().item())
    out["transfer"] = {
        "attack": params.transfer_attack.name,
        "epsilons": list(eps_list),
        "accuracy": acc,
    }
    flags["black_box_beats_white_box"] = any(
        b < w - params.black_box_tolerance for b, w in zip(acc, white)
    )


def _attack_mode(mode: Mode, params, s: Setup, seed: int, advs) -> dict[str, Any]:
    """Every measurement and sanity flag of one mode (deterministic or stochastic)."""
    with seeded(seed, s.x.device):
        clean = correct_fraction(mode.module, s.x, s.y, mode.eval_samples).mean().item()
    out: dict[str, Any] = {
        "clean_accuracy": clean,
        "eot_samples": mode.eot_samples,
        "eval_samples": mode.eval_samples,
    }
    curves = out["curves"] = _curves(mode, params, s, seed)
    flags: dict[str, bool] = {}
    flags["non_monotonic"] = any(
        any(b - a > params.monotonic_tolerance for a, b in itertools.pairwise(c["accuracy_raw"]))
        for c in curves.values()
    )
    for c in curves.values():  # an attack's own checks (AutoAttack's) join bioprior's flags
        for name, value in c.get("attack_report", {}).get("flags", {}).items():
            flags[name] = flags.get(name, False) or bool(value)
    score_curve = curves[params.score_curve]
    robust = score_curve["accuracy"][_index(score_curve["epsilons"], params.score_epsilon)]
    out["robust_accuracy"] = robust
    if params.score_epsilon > 0 and not s.score_plugin.minimal:
        _single_step_check(mode, params, s, seed, robust, out, flags)
    _unbounded_check(mode, params, s, seed, out, flags)
    _gradient_check(mode, params, s, seed, out, flags)
    if params.transfer:
        _transfer_check(mode, params, s, seed, advs, score_curve["accuracy"], out, flags)
    flags["stochastic_outputs"] = mode.stochastic
    if params.minimal_images and s.minimal:
        m = min(params.minimal_images, len(s.x))
        out["minimal"] = minimal_perturbations(
            mode,
            s.minimal,
            s.x[:m],
            s.y[:m],
            _seed(seed, "minimal"),
            params.batch_size,
            s.journal,
            f"{mode.name}/minimal",
        )
    out["flags"] = flags
    return out


def _summary(metrics: dict[str, Any], info: dict[str, Any]) -> BenchmarkResult:
    """The scored mode's figures at the top level, the flags of all modes OR-ed, the score."""
    score_mode = "stochastic" if "stochastic" in metrics["modes"] else "deterministic"
    scored = metrics["modes"][score_mode]
    metrics["score_mode"] = score_mode
    flags: dict[str, bool] = {}
    for mode_metrics in metrics["modes"].values():
        for k, v in mode_metrics["flags"].items():
            flags[k] = flags.get(k, False) or v
    flags["stochastic_without_switch"] = info["stochastic_without_switch"]
    metrics["flags"] = flags
    metrics["clean_accuracy"] = scored["clean_accuracy"]
    metrics["robust_accuracy"] = scored["robust_accuracy"]
    metrics["number_forward_passes"] = scored["eval_samples"]  # per prediction (RobustBench)
    if "minimal" in scored:
        metrics["median_minimal_l2"] = scored["minimal"]["norms"]["l2"]["median"]
        metrics["median_minimal_linf"] = scored["minimal"]["norms"]["linf"]["median"]
    clean = scored["clean_accuracy"]
    score = 0.0 if clean <= 0 else min(max(scored["robust_accuracy"] / clean, 0.0), 1.0)
    return BenchmarkResult(metrics, score)


def run_adversarial(ctx, params) -> BenchmarkResult:
    """The benchmark: set up, (transfer adversarials once,) attack every mode, summarize."""
    trained = ctx.trained()
    module, data = trained.module, trained.data
    s = _setup(ctx, params, module, data)
    modes, info = _modes(module, s.x, params, ctx.seed)
    metrics: dict[str, Any] = {
        "images": len(s.x),
        "epsilon_space": params.epsilon_space,
        "epsilon_scale_to_pixel": s.scale,
        "score_attack": params.curves[params.score_curve].attack.name,
        "threat_model": THREAT_MODELS[s.score_plugin.norm],
        "score_epsilon": params.score_epsilon,
        "score_epsilon_pixel": s.px(params.score_epsilon),
        **info,
        "modes": {},
    }
    advs: dict[float, torch.Tensor] = {}
    if params.transfer:
        advs, metrics["surrogate"] = _transfer_adversarials(ctx, params, s, data)
    for mode in modes:
        metrics["modes"][mode.name] = _attack_mode(
            mode, params, s, _seed(ctx.seed, mode.name), advs
        )
    return _summary(metrics, info)
