"""Subnormal floats are flushed to zero where bioprior trains on a CPU, and every result says so.

evanson's "standard reverse" Flexible Layer (Table 2) fills its backward pass with subnormal
numbers (sigmoid tails times gradients below 1.18e-38), which x86 CPUs compute in microcode: its
training step ran 2-3x slower than the forward-threshold layer's. Each check runs in a fresh
interpreter (the flag is a per-thread register, set where a process starts)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import run_cli, tiny_submission

from bioprior.registry.store.weights import file_metadata

pytestmark = pytest.mark.skipif(
    not __import__("torch").set_flush_denormal(False), reason="this CPU cannot flush subnormals"
)

_REVERSE_BACKWARD = """
import json, sys, torch
import torch.nn.functional as F
from bioprior.registry.base import denormals
if sys.argv[1] == "flush":
    denormals.flush()
torch.set_num_threads(2)
from bioprior.registry.contracts.constraint import InputGeometry, apply_constraint
from bioprior.registry.hooks.loading import get_registry
registry = get_registry()
model, layer = registry.get("model", "flexible_small_net"), registry.get("constraint", "flexible_layer")
counts = {}
for reverse in (False, True):
    torch.manual_seed(0)
    net = model.build(model.params.model_validate({}))
    flexible = layer.build(layer.params.model_validate({"threshold": "learned", "reverse": reverse}))
    net = apply_constraint(flexible, net, InputGeometry.of("flexible_small_net", {"in_channels": 1, "input_size": 28}))
    # Fashion-MNIST-like: a dark background (0) around bright objects, normalized by the set's
    # mean and std (0.286, 0.353) as the trainer does
    g = torch.Generator().manual_seed(1)
    x = torch.rand(100, 1, 28, 28, generator=g) * (torch.rand(100, 1, 28, 28, generator=g) < 0.5)
    x = (x - 0.286) / 0.353
    y = torch.randint(0, 10, (100,), generator=g)
    seen = []
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_full_backward_hook(lambda m, gi, go: seen.append(go[0]))
    F.cross_entropy(net(x), y).backward()
    g = seen[0]
    counts[str(reverse)] = int(((g != 0) & (g.abs() < denormals.SMALLEST_NORMAL)).sum())
print(json.dumps({"counts": counts, "state": denormals.state()}))
"""


def _python(code: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_reverse_layer_backward_is_full_of_subnormals_unless_flushed():
    kept = _python(_REVERSE_BACKWARD, "keep")
    assert kept["state"] == "kept"
    # the gradient reaching the convolution: thousands of subnormal values in reverse mode
    assert kept["counts"]["True"] > 1000
    flushed = _python(_REVERSE_BACKWARD, "flush")
    assert flushed["state"] == "flushed"
    assert flushed["counts"] == {"False": 0, "True": 0}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_scored_cpu_result_and_its_weights_record_flushed_subnormals(
    bioprior_home, write_submission, workers
):
    path = write_submission(tiny_submission("flushed", seeds=[0, 1]))
    done = run_cli("score", str(path), "--device", "cpu", "--threads", "2", "--workers", workers)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = run_cli("results", "--format", "json")
    rows = json.loads(listed.stdout)
    assert len(rows) == 2
    assert {r["provenance"]["denormals"] for r in rows} == {"flushed"}
    files = sorted((bioprior_home / "weights").rglob("*.safetensors"))
    assert files and {file_metadata(f).get("denormals") for f in files} == {"flushed"}


def test_scoring_in_process_gives_the_caller_back_its_subnormals(bioprior_home):
    """The Python API and an in-process CLI flush for the run only: afterwards the caller's
    thread computes with subnormals again (hypothesis, for one, refuses to run without them)."""
    import bioprior
    from bioprior.registry.base import denormals

    assert not denormals.main_thread_flushes()
    (row,) = bioprior.score(tiny_submission("caller"), device="cpu", workers=1)
    assert row["provenance"]["denormals"] in ("flushed", "partly flushed")
    assert not denormals.main_thread_flushes()
