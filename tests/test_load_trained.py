"""``bioprior.load_trained``: the trained model of a scored submission's variant and seed, as
RobustBench's ``load_model`` gives a leaderboard's models: from the weights cache, trusted only
where it matches what the results database recorded, never trained on the way."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_submission

import bioprior
from bioprior.registry.engine.service import weights_hash
from bioprior.registry.scoring.trained import NotTrained, training_of
from bioprior.registry.submissions.loading import validate_submission_dict


def _sub() -> dict:
    return tiny_submission("loadable", sweep={"constraints.0.params.sigma": [0.0, 0.5]})


@pytest.fixture
def scored(bioprior_home):
    rows = bioprior.score(_sub(), device="cpu", workers=1)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    return {r["variant"]["constraints.0.params.sigma"]: r for r in rows}


def test_it_gives_the_model_the_benchmark_scored(scored):
    loaded = validate_submission_dict(_sub(), bioprior.get_registry())
    _, spec = training_of(loaded, 0, {"sigma": 0.0})
    model = bioprior.load_trained(_sub(), variant={"sigma": 0.0})
    assert not model.training
    # the weights the benchmark recorded for that training, and its numbers on the test set
    assert weights_hash(model) == scored[0.0]["weights"][spec.key]
    data = bioprior.get_registry().get("dataset", "digits").build({})
    with torch.no_grad():
        accuracy = (model(data.test_x.float() / 255).argmax(1) == data.test_y).float().mean()
    assert accuracy.item() == pytest.approx(scored[0.0]["metrics"]["natural_test_acc"], abs=1e-6)
    other = bioprior.load_trained(_sub(), variant={"constraints.0.params.sigma": 0.5})
    assert weights_hash(other) != weights_hash(model)


def test_bad_requests_say_what_there_is(scored):
    with pytest.raises(LookupError, match=r"loadable: seed: 3 is not one of its seeds \[0\]"):
        bioprior.load_trained(_sub(), seed=3, variant={"sigma": 0.0})
    with pytest.raises(LookupError, match="variant: 2 variants match .*sigma=0.0; sigma=0.5"):
        bioprior.load_trained(_sub())
    with pytest.raises(LookupError, match=r"variant: 'lr' is not a swept path \(swept: sigma\)"):
        bioprior.load_trained(_sub(), variant={"lr": 0.1})
    with pytest.raises(LookupError, match="no variant matches"):
        bioprior.load_trained(_sub(), variant={"sigma": 0.25})


def test_it_never_trains_and_never_trusts_changed_weights(bioprior_home):
    with pytest.raises(NotTrained, match=r"loadable seed 0 \[sigma=0.0\]: not trained"):
        bioprior.load_trained(_sub(), variant={"sigma": 0.0})
    assert not (bioprior_home / "weights").exists() or not any(
        (bioprior_home / "weights").iterdir()
    )
    bioprior.score(_sub(), device="cpu", workers=1)
    loaded = validate_submission_dict(_sub(), bioprior.get_registry())
    _, spec = training_of(loaded, 0, {"sigma": 0.0})
    path = bioprior_home / "weights" / f"{spec.key}.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-4:] = bytes(4)  # the last float of the last tensor, zeroed
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=rf"{path.name}: weights: .*hash"):
        bioprior.load_trained(_sub(), variant={"sigma": 0.0})
