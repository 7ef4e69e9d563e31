"""A results store filled by a small real run, for the report tests (built once per process).

Two submissions on scikit-learn's digits: ``tiny-noise`` (a tiny AlexNet, internal noise swept
over sigma 0 and 0.3 kept on at inference, seeds 0 and 1; memorization, corruption, spectral and
ood_stylized and adversarial with small budgets; a ``reference:`` of made-up numbers, which the
report shows beside the measurement) and ``tiny-readout`` (co-trained with a readout of SYNTHETIC V1
responses, seed 0: memorization, a 1-cell memorization_capacity, an ood_stylized job whose external folder is missing, so it
fails, and neural_predictivity).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import yaml

NOISE = {
    "name": "tiny-noise",
    "model": {"name": "small_alexnet", "params": {"width": 0.1, "input_size": 8}},
    "constraints": [{"name": "internal_noise", "params": {"sigma": 0.0, "at_inference": True}}],
    "training": {"dataset": "digits", "epochs": 4, "batch_size": 64, "lr": 0.05, "momentum": 0.9},
    "sweep": {"constraints.0.params.sigma": [0.0, 0.3]},
    "seeds": [0, 1],
    "benchmarks": [
        {"name": "memorization"},
        {
            "name": "corruption",
            "params": {
                "corruptions": ["gaussian_noise", "contrast"],
                "severities": [1, 3, 5],
                "noise_sweeps": ["gaussian_noise_std"],
                "gaussian_noise_stds": [0.0, 0.1, 0.2],
                "max_images": 100,
                "workers": 0,
            },
        },
        {
            "name": "spectral",
            "params": {
                "centres": [1, 41, 81, 121, 161],
                "lowpass_cutoffs": [0.25, 0.5, 1.0],
                "highpass_cutoffs": [0.0, 0.25, 0.5],
                "bandwidth_corruptions": [],
                "heatmap_images": 50,
                "heatmap_stride": 2,
                "max_images": 100,
                "workers": 0,
            },
        },
        {
            "name": "ood_stylized",
            "params": {"styles": ["edges", "silhouette"], "max_images": 100, "workers": 0},
        },
        {
            "name": "adversarial",
            "params": {
                "images": 24,
                "curves": {
                    "fgsm": {"attack": {"name": "fgsm"}, "epsilons": [0.0, 0.05, 0.1]},
                    "pgd_linf": {
                        "attack": {"name": "pgd_linf", "params": {"steps": 5}},
                        "epsilons": [0.0, 0.031, 0.1],
                    },
                },
                "unbounded": {"name": "pgd_linf", "params": {"steps": 10}},
                "surrogate_params": {"width": 0.1},
                "minimal_images": 8,
                "minimal_attacks": [
                    {"name": "pgd_linf_search", "params": {"steps": 5, "search_steps": 5}},
                    {"name": "ddn", "params": {"steps": 20}},
                ],
                "eot_samples": 2,
                "eval_samples": 2,
            },
        },
    ],
    "reference": {  # made-up numbers: no key changes, the report's paper section has rows
        "source": "made-up numbers ($ not a paper)",
        "scale": "percent",
        "entries": [
            {
                "variant": {"sigma": 0.0},
                "benchmark": "adversarial",
                "metric": "clean_accuracy",
                "value": 90,
                "sem": 3,
                "n": 5,
            },
            {
                "variant": {"sigma": 0.3},
                "benchmark": "adversarial",
                "metric": "fgsm@0.1",
                "value": 50,
                "sd": 10,
                "n": 4,
            },
            {
                "variant": {"sigma": 0.3},
                "minus": {"sigma": 0.0},
                "benchmark": "memorization",
                "metric": "natural_test_acc",
                "value": -5,
                "sem": 2,
            },
        ],
    },
}

READOUT = {
    "name": "tiny-readout",
    "model": {"name": "small_alexnet", "params": {"width": 0.1, "input_size": 8}},
    "constraints": [
        {
            "name": "neural_cotraining",
            "params": {
                "layer": "features.2",
                "data": {
                    "name": "synthetic_v1",
                    "params": {
                        "num_stimuli": 200,
                        "num_neurons": 16,
                        "repeats": 2,
                        "size": 8,
                        "stimuli": "digits",
                    },
                },
            },
        }
    ],
    "training": {"dataset": "digits", "epochs": 4, "batch_size": 64, "lr": 0.05, "momentum": 0.9},
    "seeds": [0],
    "benchmarks": [
        {"name": "memorization"},
        {"name": "memorization_capacity", "params": {"classes": [2], "examples_per_class": [10]}},
        {
            "name": "ood_stylized",
            "params": {
                "styles": ["edges"],
                "max_images": 50,
                "workers": 0,
                "external": [{"name": "sketches", "path": "/nonexistent/sketches"}],
            },
        },
        {"name": "neural_predictivity"},
    ],
}


@functools.cache
def scored_home(root: Path) -> Path:
    """BIOPRIOR_HOME with results.sqlite and weights/ after scoring both submissions on CPU."""
    import torch

    import bioprior
    from bioprior.registry.hooks.loading import set_registry

    home = root / "home"
    root.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOPRIOR_HOME", str(home))
        torch.set_num_threads(1)
        try:
            for sub in (NOISE, READOUT):
                path = root / f"{sub['name']}.yaml"
                path.write_text(yaml.safe_dump(sub, sort_keys=False))
                bioprior.score(path, device="cpu", db=home / "results.sqlite")
        finally:
            torch.set_num_threads(threads)
            set_registry(None)
    return home


@functools.cache
def built_site(root: Path):
    """The report of that store, written once under ``root / 'site'``."""
    from bioprior.registry.report import build_report

    home = scored_home(root)
    return build_report(
        home / "results.sqlite",
        root / "site",
        weights_dirs=[home / "weights"],
        references=[root / "tiny-noise.yaml"],
    )
