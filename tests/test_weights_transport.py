"""Weights as bytes (Ray's object store, ``--weights-transport object-store``): checked by the
tensors hash stored in the safetensors file before they are written, atomically, into a store."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save

from bioprior.registry import atomic
from bioprior.registry.weights_transport import (
    BadWeights,
    checked_hash,
    install,
    read,
    weights_file,
)


def _weights_bytes(seed: int = 0, with_hash: bool = True) -> bytes:
    """A weights file as TrainingService._save writes it (tensors, history, tensors' hash)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    metadata = {"history": json.dumps({"loss": [1.0]})}
    if with_hash:
        metadata[atomic.TENSORS_HASH_KEY] = atomic.tensors_hash(state)
    return save(state, metadata=metadata)


def test_install_writes_checked_weights_and_read_returns_them(tmp_path):
    blob = _weights_bytes()
    digest = install(tmp_path / "weights", "abc", blob)
    path = weights_file(tmp_path / "weights", "abc")
    assert path.read_bytes() == blob
    assert read(tmp_path / "weights", "abc") == (blob, digest)
    assert install(tmp_path / "weights", "abc", blob, expected=digest) == digest  # again: same
    assert not list((tmp_path / "weights").glob("*.tmp"))
    assert read(tmp_path / "weights", "missing") is None


def test_damaged_or_foreign_weights_are_refused_and_nothing_is_written(tmp_path):
    blob = _weights_bytes()
    damaged = bytearray(blob)
    damaged[-3] ^= 0xFF  # a bit of a tensor flipped on the way
    other = _weights_bytes(seed=1)
    cases = {
        bytes(damaged): "do not match their stored hash",
        b"not a weights file": "not a safetensors file",
        _weights_bytes(with_hash=False): "no tensors_sha256",
    }
    for bad, message in cases.items():
        with pytest.raises(BadWeights, match=message):
            install(tmp_path / "weights", "abc", bad)
    expected = checked_hash("abc", blob)
    with pytest.raises(BadWeights, match="expected"):  # intact, but not the file asked for
        install(tmp_path / "weights", "abc", other, expected=expected)
    assert not (tmp_path / "weights").exists() or not list((tmp_path / "weights").iterdir())
    weights_file(tmp_path / "weights", "abc").parent.mkdir(parents=True, exist_ok=True)
    weights_file(tmp_path / "weights", "abc").write_bytes(bytes(damaged))
    assert read(tmp_path / "weights", "abc") is None  # a corrupt stored file is never sent
