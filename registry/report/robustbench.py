"""Stored results in RobustBench's ``model_info`` format (Croce et al. 2021,
github.com/RobustBench/robustbench, ``model_info/<dataset>/<threat_model>/<model>.json``)::

    bioprior results --format robustbench [-o DIR]

One document per trained model (a variant of a submission at one seed; a model scored by several
``adversarial`` parameter sets gets one per set), from its ``adversarial`` and ``corruption``
results. Only what bioprior measured is written, with RobustBench's types and formatting
(accuracies as percent strings with two decimals, ``"eps": "8/255"``):

- ``name``: the submission, the variant (its sweep values) and the seed.
- ``number_forward_passes``: forward passes per prediction in the adversarial evaluation (1 for
  a deterministic model, the noise draws averaged for a stochastic one); 1 when only the
  corruption benchmark ran (one pass per image).
- ``dataset``: RobustBench's name (``cifar10``, ``cifar100``, ``imagenet``), else bioprior's.
- ``architecture``: the model plugin's name (with its ``width`` when not 1).
- ``threat_model`` (RobustBench keeps it in the folder name): ``Linf``, ``L2``, ``L1`` or ``L0``
  of the score curve's attack; ``corruptions`` when only the corruption benchmark ran.
- ``eps``: the score epsilon in pixel units ([0, 1] images), ``k/255`` for an Linf one that is
  k/255 within 1e-6, else a decimal (``"0.5"``); ``null`` when only the corruption benchmark
  ran (as in RobustBench's corruption files).
- ``clean_acc``: the adversarial benchmark's clean accuracy, else the corruption benchmark's.
- ``autoattack_acc``: the robust accuracy, only when the score curve's attack is ``autoattack``
  (a reference version, not ``custom``); left out for every other attack (a PGD accuracy is
  not an AutoAttack one).
- ``corruptions_acc``: the mean accuracy over RobustBench's 15 corruptions (ImageNet-C's) at
  severities 1-5, only when the corruption benchmark ran all 75 (its 4 extra corruptions are
  left out of the mean) with the severity constants of RobustBench's set for that dataset
  (CIFAR-10-C's for cifar10 / cifar100, ImageNet-C's for imagenet).
- ``unreliable``: whether any sanity flag of the adversarial result is set (bioprior's and
  AutoAttack's; a model random at inference is flagged, as RobustBench accepts only
  deterministic ones).

``corruptions_mce`` is never written: RobustBench's is ImageNet-C's mCE against AlexNet, while
bioprior's ``mce`` is against the corruption benchmark's own baseline (by default the same model
without constraints), another quantity. Older adversarial results, stored before the benchmark
recorded its score attack, threat model, pixel epsilon and forward passes, are read from the
score curve and the stored parameters.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bioprior.registry.base.atomic import write_bytes

from .data import short_keys, slug, value_text

#: RobustBench's dataset names (``BenchmarkDataset``), bioprior's dataset plugins of that name
DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet": "imagenet"}
#: bioprior's norm names (an attack's ``norm``) -> RobustBench's threat-model names
THREAT_MODELS = {"linf": "Linf", "l2": "L2", "l1": "L1", "l0": "L0"}
#: RobustBench's ``CORRUPTIONS`` (robustbench/data.py), in its order
CORRUPTIONS = (
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
)
SEVERITIES = ("1", "2", "3", "4", "5")
#: the severity constants RobustBench's corrupted sets were made with, per dataset
PRESETS = {"cifar10": "cifar10_c", "cifar100": "cifar10_c", "imagenet": "imagenet_c"}
AUTOATTACK = "autoattack"
#: RobustBench's field order (``ModelInfo``), with ``threat_model`` before ``eps``
FIELDS = (
    "name",
    "number_forward_passes",
    "dataset",
    "architecture",
    "threat_model",
    "eps",
    "clean_acc",
    "autoattack_acc",
    "corruptions_acc",
    "unreliable",
)


class ExportError(Exception):
    """A folder or file that cannot be written (one line)."""


def percent(fraction: float) -> str:
    """An accuracy in [0, 1] as RobustBench writes it: ``0.8874 -> "88.74"``."""
    return f"{100 * fraction:.2f}"


def eps_text(eps: float, threat_model: str | None = "Linf") -> str:
    """A pixel-unit epsilon as RobustBench writes it: ``"8/255"`` for an Linf epsilon that is
    k/255 (within 1e-6, 0 < k < 255), else a short decimal (``"0.5"`` for L2, ``"0.031"``)."""
    k = round(eps * 255)
    if threat_model == "Linf" and 0 < k < 255 and abs(eps - k / 255) <= 1e-6:
        return f"{k}/255"
    return repr(round(float(eps), 6))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _get(tree: Any, *path: Any) -> Any:
    """``tree[a][b]...``, or None where a level is missing or not a mapping (a stored row is
    read as it is: any JSON value may stand anywhere)."""
    for key in path:
        if not isinstance(tree, dict) or not isinstance(key, str):
            return None
        tree = tree.get(key)
    return tree


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# -- fields of one result -------------------------------------------------------------------------
def dataset_name(row: dict[str, Any]) -> str | None:
    name = _get(row.get("spec"), "training", "dataset", "name")
    return DATASETS.get(name, name) if isinstance(name, str) else None


def architecture(row: dict[str, Any]) -> str | None:
    model = _get(row.get("spec"), "training", "model")
    name = _get(model, "name")
    if not isinstance(name, str):
        return None
    width = _number(_get(model, "params", "width"))
    return f"{name} (width {width:g})" if width is not None and width != 1 else name


def _score_attack(row: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The score curve's attack name and parameters."""
    metrics, params = row["metrics"], row.get("benchmark_params") or {}
    ref = _get(params, "curves", _get(params, "score_curve"), "attack")
    ref = ref if isinstance(ref, dict) else {}
    name = (
        _text(metrics.get("score_attack"))
        or _text(_get(_scored_curve(row), "attack"))
        or _text(ref.get("name"))
    )
    attack_params = ref.get("params") if ref.get("name") == name else None
    return name, attack_params if isinstance(attack_params, dict) else {}


def _scored_curve(row: dict[str, Any]) -> dict[str, Any] | None:
    metrics = row["metrics"]
    curve = _get(metrics, "modes", metrics.get("score_mode"), "curves")
    return _get(curve, _get(row.get("benchmark_params"), "score_curve"))


def _pixel_epsilon(row: dict[str, Any]) -> float | None:
    metrics, params = row["metrics"], row.get("benchmark_params") or {}
    eps = _number(metrics.get("score_epsilon_pixel"))
    if eps is not None:
        return eps
    given = _number(metrics.get("score_epsilon", params.get("score_epsilon")))
    scale = _number(metrics.get("epsilon_scale_to_pixel"))
    if scale is None and metrics.get("epsilon_space", params.get("epsilon_space")) == "pixel":
        scale = 1.0
    return None if given is None or scale is None else given * scale


def _forward_passes(row: dict[str, Any]) -> int | None:
    metrics, params = row["metrics"], row.get("benchmark_params") or {}
    found = metrics.get("number_forward_passes")
    if found is None:
        found = _get(metrics, "modes", metrics.get("score_mode"), "eval_samples")
    if found is None and metrics.get("score_mode") in ("deterministic", "stochastic"):
        random = metrics["score_mode"] == "stochastic" or metrics.get("stochastic_without_switch")
        found = params.get("eval_samples") if random else 1
    return found if isinstance(found, int) and not isinstance(found, bool) else None


def adversarial_fields(row: dict[str, Any]) -> dict[str, Any]:
    """RobustBench's fields from one ``adversarial`` result (a field it cannot give is absent)."""
    metrics = row["metrics"]
    out: dict[str, Any] = {}
    passes = _forward_passes(row)
    if passes is not None:
        out["number_forward_passes"] = passes
    norm = _text(_get(_scored_curve(row), "norm"))
    threat = _text(metrics.get("threat_model")) or THREAT_MODELS.get(norm or "")
    if threat is not None:
        out["threat_model"] = threat
    eps = _pixel_epsilon(row)
    if eps is not None:
        out["eps"] = eps_text(eps, out.get("threat_model"))
    clean = _number(metrics.get("clean_accuracy"))
    if clean is not None:
        out["clean_acc"] = percent(clean)
    attack, attack_params = _score_attack(row)
    robust = _number(metrics.get("robust_accuracy"))
    if attack == AUTOATTACK and attack_params.get("version") != "custom" and robust is not None:
        out["autoattack_acc"] = percent(robust)
    flags = metrics.get("flags")
    if isinstance(flags, dict):
        out["unreliable"] = any(bool(v) for v in flags.values())
    return out


def corruption_preset(row: dict[str, Any]) -> str | None:
    """The severity constants a ``corruption`` result was run with (``auto`` resolved by image
    size as the benchmark does: CIFAR-10-C's up to 96 px), or ``precomputed`` (a folder of
    corrupted images, e.g. CIFAR-10-C itself)."""
    metrics = row["metrics"]
    if metrics.get("precomputed"):
        return "precomputed"
    preset = metrics.get("preset")
    if preset != "auto":
        return preset if isinstance(preset, str) else None
    size = _number(metrics.get("image_size"))
    return None if size is None else ("cifar10_c" if size <= 96 else "imagenet_c")


def corruptions_accuracy(row: dict[str, Any]) -> float | None:
    """Mean accuracy over RobustBench's 15 corruptions x severities 1-5 of one ``corruption``
    result; None unless all 75 were run with the constants of RobustBench's set."""
    metrics = row["metrics"]
    preset = corruption_preset(row)
    wanted = PRESETS.get(dataset_name(row) or "")
    if wanted is not None and preset not in (wanted, "precomputed"):
        return None
    table = metrics.get("accuracy")
    values = [_number(_get(table, c, s)) for c in CORRUPTIONS for s in SEVERITIES]
    found = [v for v in values if v is not None]
    return sum(found) / len(found) if len(found) == len(values) else None


# -- documents ------------------------------------------------------------------------------------
def _variant_text(variant: dict[str, Any], short: dict[str, str], sep: str) -> list[str]:
    return [f"{short.get(k, k)}{sep}{value_text(v)}" for k, v in sorted(variant.items())]


def model_infos(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{file name: model_info}`` for the stored ``rows``: one per trained model with an ``ok``
    adversarial result (one per adversarial result when it has several) or a corruption result
    that gives ``corruptions_acc`` (the latest stored when several do)."""
    models: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        if row.get("status") != "ok" or row.get("benchmark") not in ("adversarial", "corruption"):
            continue
        key = (row["submission"], row.get("training_key") or json.dumps(row["variant"]))
        model = models.setdefault(key, {"adversarial": [], "corruption": None, "first": row})
        if row["benchmark"] == "adversarial":
            model["adversarial"].append(row)
        elif (accuracy := corruptions_accuracy(row)) is not None:
            model["corruption"] = (row, accuracy)  # rows come in storage order: the latest wins
    short = {
        sub: short_keys(
            k for (s, _), m in models.items() if s == sub for k in m["first"]["variant"]
        )
        for sub in {s for s, _ in models}
    }
    docs: list[tuple[str, str, dict[str, Any]]] = []  # (stem, discriminator, document)
    for (submission, training), model in sorted(models.items(), key=_model_order):
        first = model["first"]
        parts = _variant_text(first["variant"], short[submission], "=")
        name = ", ".join([submission, *parts, f"seed {first['seed']}"])
        stem = "_".join([submission, *_variant_text(first["variant"], short[submission], "-")])
        stem = f"{stem}_seed{first['seed']}"
        base = {
            "name": name,
            "number_forward_passes": 1,
            "dataset": dataset_name(first),
            "architecture": architecture(first),
            "threat_model": "corruptions",
            "eps": None,
        }
        corruption, accuracy = model["corruption"] or (None, None)
        if corruption is not None:
            clean = _number(corruption["metrics"].get("clean_acc"))
            if clean is not None:
                base["clean_acc"] = percent(clean)
            base["corruptions_acc"] = percent(accuracy)
        several = len(model["adversarial"]) > 1
        for row in model["adversarial"] or [None]:
            doc = dict(base)
            if row is not None:  # what the adversarial result gives, or nothing
                for k in ("number_forward_passes", "threat_model", "eps"):
                    doc.pop(k)
                doc.update(adversarial_fields(row))
                if several:  # which adversarial result
                    what = [doc.get("threat_model"), doc.get("eps"), _score_attack(row)[0]]
                    doc["name"] += ", " + " ".join(str(w) for w in what if w is not None)
            elif corruption is None:
                continue
            discriminator = (row or corruption or first).get("job_key") or training
            docs.append((stem, str(discriminator), _ordered(doc)))
    return _unique_names(docs)


def _model_order(item: tuple[tuple[str, str], dict[str, Any]]) -> tuple:
    """Submission, then variant values (numbers as numbers), then seed."""
    (submission, training), model = item
    first = model["first"]
    values = tuple(
        (0, v, "") if _number(v) is not None else (1, 0, json.dumps(v, sort_keys=True))
        for _, v in sorted(first["variant"].items())
    )
    return (submission, values, first["seed"], training)


def _ordered(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc[k] for k in FIELDS if k in doc and (doc[k] is not None or k == "eps")}


def _unique_names(docs: list[tuple[str, str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """File names: the slug of each stem; stems that clash get a short id of their result."""
    counts: dict[str, int] = {}
    for stem, _, _ in docs:
        counts[slug(stem)] = counts.get(slug(stem), 0) + 1
    out: dict[str, dict[str, Any]] = {}
    for stem, discriminator, doc in docs:
        name = slug(stem) if counts[slug(stem)] == 1 else slug(f"{stem}-{discriminator[:10]}")
        while f"{name}.json" in out:
            name += "-"
        out[f"{name}.json"] = doc
    return out


def dumps(doc: dict[str, Any]) -> bytes:
    """One model_info file as RobustBench writes them (2-space indent)."""
    return (json.dumps(doc, indent=2) + "\n").encode()


def write(infos: dict[str, dict[str, Any]], folder: Path, force: bool = False) -> tuple[int, int]:
    """Write each document to ``folder / NAME`` atomically; (written, unchanged). A file that
    exists with other content is refused (:class:`ExportError`, before anything is written)
    unless ``force``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"{folder} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {folder}: {exc.strerror or exc}") from None
    todo: list[tuple[Path, bytes]] = []
    unchanged = 0
    for name, doc in infos.items():
        path, data = folder / name, dumps(doc)
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise ExportError(f"{path} exists and is not a regular file")
        if path.exists():
            try:
                same = path.read_bytes() == data
            except OSError as exc:
                raise ExportError(f"cannot read {path}: {exc.strerror or exc}") from None
            if same:
                unchanged += 1
                continue
            if not force:
                raise ExportError(f"{path} exists with other content (--force overwrites it)")
        todo.append((path, data))
    for path, data in todo:
        try:
            write_bytes(path, data)
        except OSError as exc:
            raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None
    return len(todo), unchanged


__all__ = [
    "ExportError",
    "adversarial_fields",
    "corruption_preset",
    "corruptions_accuracy",
    "eps_text",
    "model_infos",
    "percent",
    "write",
]
