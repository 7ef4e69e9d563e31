"""How the kit exercises bioprior's own entries: small parameters (CPU seconds), and the known
exceptions with their reasons. Used by tests/test_conformance.py and by
``bioprior plugins check bioprior``; keyed by entry names (the registry), not by files."""

from __future__ import annotations

from typing import Any

from bioprior.registry.hooks.precedence import BUILTIN_DISTRIBUTION, normalize_distribution

from .kit import KitConfig

SMALL = {"width": 0.125}
TINY_ATTACK = {"steps": 3}

PARAMS: dict[str, dict[str, Any]] = {
    # models: narrow, so each builds and steps in well under a second
    "small_alexnet": {"width": 0.25, "local_response_norm": False},
    "small_inception": {"width": 0.25},
    "vgg16_flex": SMALL,
    "vgg19_bn_fcn": SMALL,
    "resnet18_cifar": SMALL,
    "resnet34_cifar": SMALL,
    "cw_conv2d": SMALL,
    "flexible_small_net": {"width": 0.25},
    "hmax": {"bands": 2, "patch_sizes": [4], "num_prototypes": 8},
    # constraints: name sites any network has
    "flexible_layer": {"layers": "all"},
    "neural_cotraining": {"layer": "conv:2"},
    # derivations: draw something the seed can change
    "subset": {"examples_per_class": 5},
    # attacks: a few steps
    "attack:pgd_linf": TINY_ATTACK,
    "attack:pgd_l2": TINY_ATTACK,
    "pgd_linf_search": {"steps": 3, "search_steps": 3},
    "pgd_l2_search": {"steps": 3, "search_steps": 3},
    "cw_l2": {"steps": 5, "binary_search_steps": 2},
    "ddn": {"steps": 5},
    "fmn_linf": {"steps": 5},
    "fmn_l2": {"steps": 5},
    "fmn_l1": {"steps": 5},
    "fmn_l0": {"steps": 5},
    "bb_l2": {"steps": 5, "binary_search_steps": 3},
    "bb_linf": {"steps": 5, "binary_search_steps": 3},
    "bb_l1": {"steps": 5, "binary_search_steps": 3},
    "bb_l0": {"steps": 5, "binary_search_steps": 3},
    # benchmarks: one condition or two, 64 images, serial stimuli
    "adversarial": {
        "images": 16,
        "curves": {
            "pgd_linf": {
                "attack": {"name": "pgd_linf", "params": TINY_ATTACK},
                "epsilons": [0.0, 0.031],
            }
        },
        "score_curve": "pgd_linf",
        "unbounded": {"name": "pgd_linf", "params": {"steps": 5, "rel_stepsize": 0.5}},
        "transfer": False,
        "minimal_attacks": [{"name": "ddn", "params": {"steps": 5}}],
        "minimal_images": 8,
        "eot_samples": 2,
        "eval_samples": 2,
        "stochastic_repeats": 2,
    },
    "corruption": {
        "corruptions": ["gaussian_noise"],
        "severities": [1],
        "noise_sweeps": ["gaussian_noise_std"],
        "gaussian_noise_stds": [0.0, 0.1],
        "max_images": 64,
        "workers": 0,
    },
    "spectral": {
        "centres": [1.0, 11.0],
        "lowpass_cutoffs": [0.5, 1.0],
        "highpass_cutoffs": [0.0, 0.5],
        "bandwidth_corruptions": [],
        "fourier_heatmap": False,
        "max_images": 64,
        "workers": 0,
    },
    "ood_stylized": {"styles": ["edges", "silhouette"], "max_images": 64, "workers": 0},
    "memorization_capacity": {"classes": [2], "examples_per_class": [10]},
}

EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {
    "dataset:gaussian_noise": {
        "value_range": "Gaussian random images are unbounded by design (tsvetkov2020, Methods)"
    },
    "benchmark:neural_predictivity": {
        "score_in_range": "no score without a neural_cotraining readout (require_readout: false)"
    },
}

SLOW_CHECKS: dict[str, dict[str, str]] = {
    f"attack:bb_{norm}": {"respects_epsilon_and_bounds": "numba compiles for 30-60 s"}
    for norm in ("l0", "l1", "l2", "linf")
}

CONFIG = KitConfig(params=PARAMS, family_members={"timm": "test_resnet"})


def config_for(distribution: str) -> tuple[KitConfig, dict, dict]:
    """(config, expected failures, slow checks) for ``distribution``: bioprior's own table for
    the built-ins, the kit's defaults for anyone else."""
    if normalize_distribution(distribution) == BUILTIN_DISTRIBUTION:
        return CONFIG, EXPECTED_FAILED_CHECKS, SLOW_CHECKS
    return KitConfig(), {}, {}
