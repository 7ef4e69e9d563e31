"""create_model(..., dataset=NAME): the input geometry of a named dataset; a clear channel error."""

from __future__ import annotations

import pytest
import torch

import bioprior
from bioprior.registry.api import InputMismatch, dataset_geometry


def test_geometry_from_a_named_dataset_feeds_its_images():
    from bioprior.registry.hooks.loading import get_registry

    digits = get_registry().get("dataset", "digits").build({})
    net = bioprior.create_model("small_alexnet", dataset="digits", width=0.1).eval()
    with torch.no_grad():
        logits = net(digits.as_float().test_x[:5])
    assert logits.shape == (5, digits.num_classes)
    # a derivation takes its default source's geometry; explicit params win
    assert dataset_geometry("subset") == dataset_geometry("digits")
    wide = bioprior.create_model("small_alexnet", dataset="digits", input_size=16, width=0.1)
    assert wide(torch.rand(2, 1, 16, 16)).shape == (2, 10)
    # declared geometry: no data needed on disk
    assert dataset_geometry("cifar100") == {"in_channels": 3, "input_size": 32, "num_classes": 100}


def test_channel_mismatch_says_how_to_build_the_model():
    net = bioprior.create_model("small_alexnet", width=0.1)  # CIFAR-10's 3 x 32 x 32
    with pytest.raises(InputMismatch, match=r"3-channel images but got 1-channel.*dataset="):
        net(torch.rand(2, 1, 32, 32))
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
