"""Adversarial attacks as plugins (kind ``attack``), used by the ``adversarial`` benchmark.

Each entry's factory takes its parsed parameters and returns an
:class:`bioprior.benchmarks.adversarial.foolbox_attacks.AttackPlugin`: a foolbox 3 attack object plus
its threat model (``norm``: ``linf`` | ``l2`` | ``l1`` | ``l0``) and whether it is a fixed-epsilon
attack (robust accuracy at given epsilons) or a minimization attack (the smallest adversarial
perturbation per image). A third party adds an attack the same way, through the
``register_attacks`` hook::

    @hookimpl
    def register_attacks(register):
        register(name="my_attack", factory="my_pkg.attacks:build", params=MyParams, version="1")

All epsilons and step sizes are in the benchmark's input space: images in [0, 1] pixel units
(foolbox ``bounds=(0, 1)``); the benchmark converts epsilons given in normalized units first.

Budgets (documented choices, for a CPU leaderboard): foolbox's C&W default is 9 x 10,000 steps;
``cw_l2`` ships 5 x 100. Brendel-Bethge attacks (``bb_*``) need ``numba`` (not declared by
foolbox) and spend 30-60 s compiling on first use in each process, so the benchmark leaves them
off by default; add them to ``minimal_attacks`` for a thorough evaluation (li2019, supplement).

``autoattack`` is AutoAttack (Croce & Hein 2020) through the reference code (``pyautoattack``,
the optional extra ``bioprior[autoattack]``, declared in the entry's ``requires`` so that a
submission naming it without the extra is refused before training), wrapped as a foolbox
fixed-epsilon attack (:mod:`bioprior.benchmarks.adversarial.autoattack`).

No torch / foolbox import at module level: factories are lazy ``"module:attr"`` strings.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from bioprior.plugin import PluginParams, hookimpl

_IMPL = "bioprior.benchmarks.adversarial.foolbox_attacks"
FOOLBOX = "Rauber, Brendel & Bethge (2017/2020), Foolbox 3 (JOSS)"
GOODFELLOW2015 = "Goodfellow, Shlens & Szegedy (2015), ICLR; evanson (FGSM, Eq. 2)"
MADRY2018 = "Madry et al. (2018), ICLR; evanson (PGD, Table 3)"
CW2017 = "Carlini & Wagner (2017), IEEE S&P; li2019 supplement"
DDN2019 = "Rony et al. (2019), CVPR; li2019 supplement"
FMN2021 = "Pintor et al. (2021), NeurIPS (fast minimum-norm attack)"
BB2019 = (
    "Brendel et al. (2019), NeurIPS (Accurate, reliable and fast robustness evaluation); li2019"
)


class FGSMParams(PluginParams):
    random_start: bool = Field(
        default=False, description="Start from a random point in the epsilon ball (evanson: no)."
    )


class PGDParams(PluginParams):
    steps: int = Field(default=20, ge=1, le=10_000, description="Gradient steps (evanson: 20).")
    rel_stepsize: float = Field(
        default=0.003 / 0.031,
        gt=0,
        le=10,
        description="Step size relative to epsilon (evanson: step 0.003 at eps 0.031).",
    )
    abs_stepsize: float | None = Field(
        default=None,
        gt=0,
        description="Absolute step size in pixel units; takes precedence over rel_stepsize.",
    )
    random_start: bool = Field(
        default=True, description="Uniform random start in the epsilon ball (Madry et al.)."
    )


class PGDL2Params(PGDParams):
    rel_stepsize: float = Field(
        default=0.1, gt=0, le=10, description="Step size relative to epsilon."
    )


class PGDSearchParams(PluginParams):
    steps: int = Field(default=20, ge=1, le=10_000, description="PGD steps per epsilon tried.")
    rel_stepsize: float = Field(
        default=0.1, gt=0, le=10, description="PGD step size relative to the epsilon tried."
    )
    random_start: bool = Field(default=True, description="Random start in the epsilon ball.")
    search_steps: int = Field(
        default=10, ge=1, le=40, description="Bisection steps on each image's epsilon."
    )
    max_epsilon: float | None = Field(
        default=None,
        gt=0,
        description="Upper end of the search (None: the whole [0, 1] box: 1 for Linf, "
        "sqrt(pixels) for L2).",
    )


class CWParams(PluginParams):
    binary_search_steps: int = Field(
        default=5, ge=1, le=20, description="Binary search steps on the constant c (foolbox: 9)."
    )
    steps: int = Field(
        default=100, ge=1, le=100_000, description="Adam steps per constant (foolbox: 10,000)."
    )
    stepsize: float = Field(default=0.05, gt=0, description="Adam step size (foolbox: 0.01).")
    confidence: float = Field(default=0.0, ge=0, description="Required logit margin.")
    initial_const: float = Field(
        default=0.1, gt=0, description="Initial trade-off constant c (foolbox: 0.001)."
    )
    abort_early: bool = Field(default=True, description="Stop a constant's search once stuck.")


class DDNParams(PluginParams):
    init_epsilon: float = Field(default=1.0, gt=0, description="Initial L2 norm of the ball.")
    steps: int = Field(default=100, ge=1, le=100_000, description="Optimization steps.")
    gamma: float = Field(default=0.05, gt=0, lt=1, description="Norm adaptation factor.")


class FMNParams(PluginParams):
    steps: int = Field(default=100, ge=1, le=100_000, description="Optimization steps.")
    max_stepsize: float = Field(default=1.0, gt=0, description="Initial (largest) step size.")
    gamma: float = Field(default=0.05, gt=0, lt=1, description="Epsilon adaptation factor.")
    binary_search_steps: int = Field(
        default=10, ge=1, le=40, description="Steps of the initial boundary search."
    )

    def gradient_passes(self) -> int:
        """The optimization's steps (the initial boundary search is forward passes only)."""
        return self.steps


class BBParams(PluginParams):
    steps: int = Field(
        default=200, ge=1, le=100_000, description="Boundary-walk steps (foolbox: 1000)."
    )
    lr: float = Field(default=1e-3, gt=0, description="Trust-region step size.")
    overshoot: float = Field(default=1.1, ge=1, description="Overshoot of the boundary.")
    binary_search_steps: int = Field(
        default=10, ge=1, le=40, description="Line-search steps to the boundary at the start."
    )

    def gradient_passes(self) -> int:
        """The boundary walk's steps (the line search at the start is forward passes only)."""
        return self.steps


AUTOATTACK = (
    "Croce & Hein (2020), ICML (AutoAttack: APGD-CE, APGD-T, FAB-T, Square); the reference "
    "implementation through pyautoattack"
)
AUTOATTACK_NAMES = Literal["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
#: budgets of the reference's versions, which only ``version: custom`` may change
AUTOATTACK_BUDGET = {
    "iterations": 100,
    "apgd_restarts": 1,
    "fab_restarts": 1,
    "target_classes": 9,
    "square_queries": 5000,
}


class AutoAttackParams(PluginParams):
    """AutoAttack as RobustBench runs it (Croce & Hein 2020, Sec. 4 "AutoAttack"): ``standard``
    is APGD-CE, APGD-T (9 targets), FAB-T (9 targets) and Square (5,000 queries), each on the
    points still robust; ``plus`` adds restarts and the untargeted APGD-DLR / FAB; ``rand`` is
    APGD-CE and APGD-DLR with EOT over 20 passes, for randomized defenses."""

    version: Literal["standard", "plus", "rand", "custom"] = Field(
        default="standard",
        description="The reference's version; 'custom' runs `attacks` with the budgets below.",
    )
    norm: Literal["Linf", "L2", "L1"] = Field(
        default="Linf", description="Threat model (RobustBench: Linf at 8/255, L2 at 0.5)."
    )
    attacks: list[AUTOATTACK_NAMES] | None = Field(
        default=None,
        description="Attacks run in this order (version 'custom' only; else the version's).",
    )
    iterations: int = Field(
        default=AUTOATTACK_BUDGET["iterations"],
        ge=1,
        le=100_000,
        description="APGD / FAB iterations (custom only; the reference: 100).",
    )
    apgd_restarts: int = Field(
        default=AUTOATTACK_BUDGET["apgd_restarts"],
        ge=1,
        le=100,
        description="APGD restarts (custom only; standard: 1).",
    )
    fab_restarts: int = Field(
        default=AUTOATTACK_BUDGET["fab_restarts"],
        ge=1,
        le=100,
        description="FAB restarts (custom only; standard: 1).",
    )
    target_classes: int = Field(
        default=AUTOATTACK_BUDGET["target_classes"],
        ge=1,
        le=1000,
        description="Target classes of APGD-T and FAB-T (custom only; standard: 9).",
    )
    square_queries: int = Field(
        default=AUTOATTACK_BUDGET["square_queries"],
        ge=1,
        le=1_000_000,
        description="Square Attack queries (custom only; standard: 5,000).",
    )
    on_stochastic: Literal["rand", "warn"] = Field(
        default="rand",
        description="A model random at inference: attack it with version 'rand' (EOT over 20 "
        "passes, as the reference recommends) or keep this version and warn.",
    )

    def gradient_passes(self) -> int:
        """A floor: the first attack's iterations and restarts on every image (the later
        attacks run on the images still robust, unknown before the run; Square takes no
        gradients)."""
        restarts = self.apgd_restarts if self.version == "custom" else 1
        return (self.iterations if self.version == "custom" else 100) * restarts

    @model_validator(mode="after")
    def _custom_only(self) -> AutoAttackParams:
        changed = [k for k, v in AUTOATTACK_BUDGET.items() if getattr(self, k) != v]
        if self.version == "custom":
            if not self.attacks:
                raise ValueError("version 'custom' needs `attacks` (e.g. [apgd-ce, apgd-t])")
        elif self.attacks is not None or changed:
            names = ", ".join((["attacks"] if self.attacks is not None else []) + changed)
            raise ValueError(
                f"{names}: the {self.version} version fixes its attacks and budgets; "
                "use version: custom to change them"
            )
        return self


_ATTACKS = [
    ("fgsm", "fgsm", FGSMParams, GOODFELLOW2015, "Linf fast gradient sign method (fixed eps)."),
    ("fgm_l2", "fgm_l2", FGSMParams, GOODFELLOW2015, "L2 fast gradient method (fixed eps)."),
    ("pgd_linf", "pgd_linf", PGDParams, MADRY2018, "Linf projected gradient descent (fixed eps)."),
    ("pgd_l2", "pgd_l2", PGDL2Params, MADRY2018, "L2 projected gradient descent (fixed eps)."),
    (
        "pgd_linf_search",
        "pgd_linf_search",
        PGDSearchParams,
        MADRY2018,
        "Minimal Linf perturbation: PGD with a per-image bisection on epsilon.",
    ),
    (
        "pgd_l2_search",
        "pgd_l2_search",
        PGDSearchParams,
        MADRY2018,
        "Minimal L2 perturbation: PGD with a per-image bisection on epsilon.",
    ),
    ("cw_l2", "cw_l2", CWParams, CW2017, "Carlini & Wagner L2 (minimal; 5 x 100 steps budget)."),
    ("ddn", "ddn", DDNParams, DDN2019, "Decoupled direction and norm, L2 (minimal)."),
    ("fmn_linf", "fmn_linf", FMNParams, FMN2021, "Fast minimum-norm attack, Linf (minimal)."),
    ("fmn_l2", "fmn_l2", FMNParams, FMN2021, "Fast minimum-norm attack, L2 (minimal)."),
    ("fmn_l1", "fmn_l1", FMNParams, FMN2021, "Fast minimum-norm attack, L1 (minimal)."),
    ("fmn_l0", "fmn_l0", FMNParams, FMN2021, "Fast minimum-norm attack, L0 (minimal)."),
    ("bb_l2", "bb_l2", BBParams, BB2019, "Brendel-Bethge L2 (minimal; numba, slow first use)."),
    ("bb_linf", "bb_linf", BBParams, BB2019, "Brendel-Bethge Linf (minimal; numba)."),
    ("bb_l1", "bb_l1", BBParams, BB2019, "Brendel-Bethge L1 (minimal; numba)."),
    ("bb_l0", "bb_l0", BBParams, BB2019, "Brendel-Bethge L0 (minimal; numba)."),
]


@hookimpl
def register_attacks(register):
    for name, builder, params, citation, description in _ATTACKS:
        register(
            name=name,
            factory=f"{_IMPL}:build_{builder}",
            params=params,
            version="1",
            citation=f"{citation}; {FOOLBOX}",
            description=description,
        )
    register(
        name="autoattack",
        factory="bioprior.benchmarks.adversarial.autoattack:build_autoattack",
        params=AutoAttackParams,
        version="1",
        citation=AUTOATTACK,
        description="AutoAttack (standard | plus | rand | custom; Linf, L2, L1), fixed eps; "
        "its checks become flags.",
        extra={"requires": {"pyautoattack": "bioprior[autoattack]"}},
    )
