"""`bioprior results --format robustbench`: RobustBench's model_info JSON from real stored rows.

A tiny AlexNet on digits, internal noise 0 and 0.3 kept on at inference (a deterministic and a
stochastic model), scored once with a small PGD adversarial benchmark and the corruption
benchmark over RobustBench's 15 corruptions at severities 1-5; the documents are checked against
the rows' numbers and against the formatting of RobustBench's own files (written out below)."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

from bioprior.registry.report import robustbench as rb
from bioprior.registry.store.results import ResultStore

#: RobustBench's model_info/cifar10/Linf/Gowal2021Improving_70_16_ddpm_100m.json (fields kept
#: as they are there) and model_info/imagenet/corruptions/Standard_R50.json
ROBUSTBENCH_LINF = json.loads(
    """{
  "link": "https://arxiv.org/abs/2110.09468",
  "name": "Improving Robustness using Generated Data",
  "additional_data": false,
  "number_forward_passes": 1,
  "dataset": "cifar10",
  "venue": "NeurIPS 2021",
  "architecture": "WideResNet-70-16",
  "eps": "8/255",
  "clean_acc": "88.74",
  "reported": "66.10",
  "autoattack_acc": "66.11",
  "external": "66.10",
  "unreliable": false
}"""
)
ROBUSTBENCH_CORRUPTIONS = json.loads(
    """{
  "link": "https://github.com/RobustBench/robustbench/",
  "name": "Standardly trained model",
  "authors": "Torchvision",
  "additional_data": false,
  "number_forward_passes": 1,
  "dataset": "imagenet",
  "venue": "N/A",
  "architecture": "ResNet-50",
  "eps": null,
  "clean_acc": "76.72",
  "reported": "",
  "corruptions_acc_3d": "47.12",
  "corruptions_mce_3d": "73.16",
  "corruptions_acc": "39.48",
  "corruptions_mce": "76.38"
}"""
)
#: the shape of each field in RobustBench's files
PERCENT = re.compile(r"^\d{1,3}\.\d{2}$")
EPS = re.compile(r"^(\d+/255|\d+\.\d+)$")

CORRUPTIONS = [
    "shot_noise",
    "motion_blur",
    "snow",
    "pixelate",
    "gaussian_noise",
    "defocus_blur",
    "brightness",
    "fog",
    "zoom_blur",
    "frost",
    "glass_blur",
    "impulse_noise",
    "contrast",
    "jpeg_compression",
    "elastic_transform",
]
SUBMISSION = {
    "name": "tiny-rb",
    "model": {"name": "small_alexnet", "params": {"width": 0.1, "input_size": 8}},
    "constraints": [{"name": "internal_noise", "params": {"sigma": 0.0, "at_inference": True}}],
    "training": {"dataset": "digits", "epochs": 3, "batch_size": 64, "lr": 0.05, "momentum": 0.9},
    "sweep": {"constraints.0.params.sigma": [0.0, 0.3]},
    "seeds": [0],
    "benchmarks": [
        {
            "name": "adversarial",
            "params": {
                "images": 16,
                "curves": {
                    "pgd_linf": {
                        "attack": {"name": "pgd_linf", "params": {"steps": 3}},
                        "epsilons": [0.0, 0.031],
                    }
                },
                "unbounded": {"name": "pgd_linf", "params": {"steps": 3}},
                "transfer": False,
                "minimal_images": 0,
                "eot_samples": 2,
                "eval_samples": 3,
            },
        },
        {
            "name": "corruption",
            "params": {
                "corruptions": CORRUPTIONS,
                "noise_sweeps": [],
                "max_images": 8,
                "baseline": None,
                "workers": 0,
            },
        },
    ],
}


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    import torch

    import bioprior
    from bioprior.registry.hooks.loading import set_registry

    root = tmp_path_factory.mktemp("robustbench")
    path = root / "tiny-rb.yaml"
    path.write_text(yaml.safe_dump(SUBMISSION, sort_keys=False))
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOPRIOR_HOME", str(root / "home"))
        torch.set_num_threads(1)
        try:
            bioprior.score(path, device="cpu", db=root / "results.sqlite")
        finally:
            torch.set_num_threads(threads)
            set_registry(None)
    return root / "results.sqlite"


@pytest.fixture(scope="module")
def rows(db):
    with ResultStore.open_readonly(db) as store:
        found = store.rows()
    assert {r["status"] for r in found} == {"ok"} and len(found) == 4
    return found


def _rows(rows, benchmark):
    return sorted(
        (r for r in rows if r["benchmark"] == benchmark),
        key=lambda r: r["variant"]["constraints.0.params.sigma"],
    )


def _doc(infos, sigma):
    (doc,) = [d for d in infos.values() if d["name"] == f"tiny-rb, sigma={sigma:g}, seed 0"]
    return doc


def test_documents_hold_the_rows_numbers(rows):
    infos = rb.model_infos(rows)
    assert sorted(infos) == ["tiny-rb_sigma-0.3_seed0.json", "tiny-rb_sigma-0_seed0.json"]
    for adv, cor in zip(_rows(rows, "adversarial"), _rows(rows, "corruption"), strict=True):
        sigma = adv["variant"]["constraints.0.params.sigma"]
        m = adv["metrics"]
        doc = _doc(infos, sigma)
        # 15 corruptions x 5 severities, read here from the stored table independently
        table = cor["metrics"]["accuracy"]
        mean = sum(table[c][str(s)] for c in CORRUPTIONS for s in range(1, 6)) / 75
        assert doc == {
            "name": f"tiny-rb, sigma={sigma:g}, seed 0",
            "number_forward_passes": 3 if m["score_mode"] == "stochastic" else 1,
            "dataset": "digits",
            "architecture": "small_alexnet (width 0.1)",
            "threat_model": "Linf",
            "eps": "0.031",
            "clean_acc": f"{100 * m['clean_accuracy']:.2f}",
            "corruptions_acc": f"{100 * mean:.2f}",
            "unreliable": any(m["flags"].values()),
        }
    # the noisy model is random at inference: scored over 3 draws, and flagged
    assert _rows(rows, "adversarial")[1]["metrics"]["score_mode"] == "stochastic"
    assert _doc(infos, 0.3)["unreliable"] is True


def test_fields_are_formatted_as_robustbenchs(rows):
    for example in (ROBUSTBENCH_LINF, ROBUSTBENCH_CORRUPTIONS):
        for key in ("clean_acc", "autoattack_acc", "corruptions_acc", "corruptions_mce"):
            assert key not in example or PERCENT.match(example[key]), key
    assert EPS.match(ROBUSTBENCH_LINF["eps"])
    assert rb.eps_text(8 / 255) == ROBUSTBENCH_LINF["eps"]
    assert rb.eps_text(4 / 255 + 5e-7) == "4/255" and rb.eps_text(0.031) == "0.031"
    assert rb.eps_text(0.5, "L2") == "0.5" and rb.eps_text(1.0) == "1.0"
    assert rb.eps_text(2 / 255, "L2") == "0.007843"  # k/255 is Linf's convention only
    assert rb.percent(0.8874) == ROBUSTBENCH_LINF["clean_acc"] and rb.percent(0.661) == "66.10"
    assert rb.percent(1.0) == "100.00" and rb.percent(0.0) == "0.00"
    aa = _autoattack(_rows(rows, "adversarial")[0])
    cor = _rows(rows, "corruption")[0]
    docs = [*rb.model_infos(rows).values(), *rb.model_infos([aa, cor]).values()]
    docs += rb.model_infos([cor]).values()
    assert any("autoattack_acc" in d for d in docs) and any(d["eps"] is None for d in docs)
    for doc in docs:
        example = ROBUSTBENCH_CORRUPTIONS if doc["eps"] is None else ROBUSTBENCH_LINF
        for key, value in doc.items():
            if key in example:
                assert type(value) is type(example[key]), key
            if key in ("clean_acc", "autoattack_acc", "corruptions_acc"):
                assert PERCENT.match(value), (key, value)
        assert doc["eps"] is None or EPS.match(doc["eps"])
        assert list(doc) == [k for k in rb.FIELDS if k in doc]  # RobustBench's order
        assert "corruptions_mce" not in doc  # bioprior's mCE is not against AlexNet
    # the same JSON text a RobustBench file holds: 2-space indent
    assert rb.dumps(ROBUSTBENCH_LINF).decode().startswith('{\n  "link": ')


def _autoattack(row, version=None):
    aa = copy.deepcopy(row)
    aa["metrics"]["score_attack"] = "autoattack"
    attack = aa["benchmark_params"]["curves"]["pgd_linf"]["attack"]
    attack.update(name="autoattack", params={"version": version} if version else {})
    for mode in aa["metrics"]["modes"].values():
        mode["curves"]["pgd_linf"]["attack"] = "autoattack"
    return aa


def test_autoattack_acc_only_when_the_score_attack_is_autoattack(rows):
    row = _rows(rows, "adversarial")[0]
    assert row["metrics"]["score_attack"] == "pgd_linf"
    assert all("autoattack_acc" not in d for d in rb.model_infos(rows).values())
    for version in (None, "standard", "rand"):
        fields = rb.adversarial_fields(_autoattack(row, version))
        assert fields["autoattack_acc"] == f"{100 * row['metrics']['robust_accuracy']:.2f}"
    assert "autoattack_acc" not in rb.adversarial_fields(_autoattack(row, "custom"))


def test_unreliable_when_any_flag_is_set(rows):
    row = copy.deepcopy(_rows(rows, "adversarial")[0])
    flags = row["metrics"]["flags"]
    for k in flags:
        flags[k] = False
    assert rb.adversarial_fields(row)["unreliable"] is False
    for name in ("vanishing_gradients", "autoattack_zero_gradients"):
        row["metrics"]["flags"] = {**flags, name: True}
        assert rb.adversarial_fields(row)["unreliable"] is True


def test_older_rows_give_the_same_fields(rows):
    """Rows stored before the benchmark recorded its score attack, threat model, pixel epsilon
    and forward passes: read from the score curve and the stored parameters."""
    for row in _rows(rows, "adversarial"):
        old = copy.deepcopy(row)
        for k in ("score_attack", "threat_model", "score_epsilon", "score_epsilon_pixel"):
            old["metrics"].pop(k)
        old["metrics"].pop("number_forward_passes")
        for mode in old["metrics"]["modes"].values():
            mode.pop("eval_samples")
        assert rb.adversarial_fields(old) == rb.adversarial_fields(row)
        old["metrics"]["epsilon_scale_to_pixel"] = 0.5  # epsilon_space: normalized, std 0.5
        assert rb.adversarial_fields(old)["eps"] == "0.0155"
        aa = _autoattack(row)
        aa["metrics"].pop("score_attack")
        assert "autoattack_acc" in rb.adversarial_fields(aa)


def test_corruptions_acc_only_over_robustbenchs_corruption_set(rows):
    cor = _rows(rows, "corruption")[0]
    mean = rb.corruptions_accuracy(cor)
    extra = copy.deepcopy(cor)  # bioprior's 4 extra corruptions are not in RobustBench's mean
    extra["metrics"]["accuracy"]["saturate"] = {str(s): 0.0 for s in range(1, 6)}
    assert rb.corruptions_accuracy(extra) == mean
    fewer = copy.deepcopy(cor)
    del fewer["metrics"]["accuracy"]["fog"]["5"]
    assert rb.corruptions_accuracy(fewer) is None
    assert rb.model_infos([fewer]) == {}  # nothing RobustBench measures is left
    cifar = copy.deepcopy(cor)
    cifar["spec"]["training"]["dataset"]["name"] = "cifar10"
    assert rb.corruptions_accuracy(cifar) == mean  # 8 px: CIFAR-10-C's constants (auto)
    cifar["metrics"]["preset"] = "imagenet_c"
    assert rb.corruptions_accuracy(cifar) is None
    (only,) = rb.model_infos([cor]).values()
    assert only["threat_model"] == "corruptions" and only["eps"] is None
    assert only["clean_acc"] == f"{100 * cor['metrics']['clean_acc']:.2f}"
    assert "unreliable" not in only and "autoattack_acc" not in only


def test_cli_prints_writes_and_refuses_to_overwrite(db, rows, tmp_path):
    from typer.testing import CliRunner

    from bioprior.registry.cli.app import app

    runner = CliRunner()
    base = ["results", "--db", str(db), "--format", "robustbench"]
    printed = runner.invoke(app, base)
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout) == rb.model_infos(rows)

    out = tmp_path / "model_info"
    done = runner.invoke(app, [*base, "-o", str(out)])
    assert done.exit_code == 0 and "wrote 2 " in done.stdout, done.output
    written = {p.name: json.loads(p.read_text()) for p in out.iterdir()}
    assert written == rb.model_infos(rows)
    again = runner.invoke(app, [*base, "-o", str(out)])
    assert again.exit_code == 0 and "wrote 0 " in again.stdout and "2 unchanged" in again.stdout

    edited = out / "tiny-rb_sigma-0_seed0.json"
    edited.write_text('{"name": "someone else\'s"}\n')
    refused = runner.invoke(app, [*base, "-o", str(out)])
    assert refused.exit_code == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(edited) in lines[0]
    assert edited.read_text() == '{"name": "someone else\'s"}\n'  # nothing written
    forced = runner.invoke(app, [*base, "-o", str(out), "--force"])
    assert forced.exit_code == 0 and "wrote 1 " in forced.stdout
    assert json.loads(edited.read_text()) == written[edited.name]
    assert sorted(p.name for p in out.iterdir()) == sorted(written)  # no temp file left

    cases = {
        "output is a file": ([*base, "-o", str(edited)], "-o"),
        "unknown format": (["results", "--db", str(db), "-f", "robust"], "--format"),
        "missing db": ([*base[:2], str(tmp_path / "nope.sqlite"), *base[3:]], "--db"),
        "output without robustbench": (["results", "--db", str(db), "-o", str(out)], "--output"),
    }
    for name, (args, needle) in cases.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (name, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], name
