"""Human trials on an external set, in model-vs-human's raw-data layout (Geirhos et al. 2021,
https://github.com/bethgelab/model-vs-human, ``raw-data/<dataset>/*.csv``): one CSV per
subject and session, a header row and one row per trial::

    subj,session,trial,rt,object_response,category,condition,imagename
    subject-01,1,1,0.79,oven,oven,0,0001_sk_s01_0_oven_n04111531_14126.png

(column names in any case; ``subj``, ``object_response``, ``category``, ``condition`` and
``imagename`` are read). A trial is correct when ``object_response == category``.

Each trial is matched to one image of the external set's folder (``<path>/<class>/<image>``):
by file name, else by model-vs-human's image id (``get_short_imagename`` of its
``helper/plotting_helper.py``: the name without the experiment-specific prefix such as the trial
number and subject, e.g. ``n04111531_14126.png``); several candidates are narrowed to the trial's
``category`` folder. The image's folder must be the trial's ``category``.

Per ``condition``, as model-vs-human's ``ErrorConsistency`` and ``SixteenClassAccuracyDifference``
do: for each subject, the model's correctness on exactly the images that subject saw against the
subject's; error consistency (Cohen's kappa, Geirhos, Meding & Wichmann 2020) averaged over the
subjects (a subject for whom kappa is undefined, both always right or always wrong, is left out
of the mean), and the accuracy difference as model-vs-human defines it: the squared difference
of the accuracies, averaged over the subjects. Both are then averaged over the conditions.

Standard library only at module level (the parameter validator reads the files while a
submission is checked, before anything trains).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LAYOUT = "subj,session,trial,rt,object_response,category,condition,imagename"
REQUIRED = ("subj", "object_response", "category", "condition", "imagename")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_TRIALS = 1_000_000


@dataclass(frozen=True)
class Trial:
    file: str
    line: int
    subject: str
    condition: str
    category: str
    response: str
    imagename: str

    @property
    def correct(self) -> bool:
        return self.response == self.category

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def list_images(path: Path) -> list[tuple[str, Path]]:
    """``(class, file)`` of every image under ``path/<class>/``, classes and files sorted (the
    order the external set is evaluated in)."""
    out = []
    for folder in sorted(d for d in path.iterdir() if d.is_dir()):
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                out.append((folder.name, f))
    return out


def short_imagename(imagename: str) -> str:
    """model-vs-human's image id (``helper/plotting_helper.py``, ``get_short_imagename``): the
    last two ``_``-separated parts when the first of them is an ImageNet synset (``n0...``),
    else the last part; a name without ``_`` as it is."""
    splits = imagename.split("_")
    if len(splits) > 1:
        a, b = splits[-2:]
        return f"{a}_{b}" if a.startswith("n0") else b
    return splits[0]


def csv_files(paths: Iterable[str]) -> list[Path]:
    """Each given path: a CSV file, or a folder whose ``*.csv`` files are read (sorted), as
    model-vs-human reads ``raw-data/<dataset>/``. Missing paths are returned as they are."""
    out: list[Path] = []
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.suffix.lower() == ".csv")
            if not found:
                raise ValueError(f"no .csv file in the folder {path}")
            out += found
        else:
            out.append(path)
    return out


_CACHE: dict[tuple[str, int, int], list[Trial]] = {}


def read_file(path: Path) -> list[Trial]:
    """The trials of one CSV (cached by path, modification time and size); ValueError naming
    the file and the field for anything that is not the layout."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    key = (str(path), info.st_mtime_ns, info.st_size)
    if key not in _CACHE:
        _CACHE[key] = _parse(path)
    return _CACHE[key]


def _parse(path: Path) -> list[Trial]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                raise ValueError(f"{path}: empty file (expected a header: {LAYOUT})")
            cols = [h.strip().lower() for h in header]
            missing = [c for c in REQUIRED if c not in cols]
            if missing:
                raise ValueError(
                    f"{path}: no column {missing[0]!r} (model-vs-human's raw-data layout: {LAYOUT})"
                )
            at = {c: cols.index(c) for c in REQUIRED}
            trials = []
            for row in reader:
                line = reader.line_num
                if not any(x.strip() for x in row):
                    continue
                if len(row) != len(cols):
                    raise ValueError(
                        f"{path}:{line}: {len(row)} fields, the header has {len(cols)}"
                    )
                values = {c: row[i].strip() for c, i in at.items()}
                for c in ("subj", "category", "condition", "imagename"):
                    if not values[c]:
                        raise ValueError(f"{path}:{line}: {c}: empty")
                trials.append(
                    Trial(
                        str(path),
                        line,
                        values["subj"],
                        values["condition"],
                        values["category"],
                        values["object_response"],
                        values["imagename"],
                    )
                )
                if len(trials) > MAX_TRIALS:
                    raise ValueError(f"{path}: over {MAX_TRIALS:,} trials")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: not a CSV file: {exc}") from None
    if not trials:
        raise ValueError(f"{path}: no trials (only a header)")
    return trials


def read_trials(paths: Iterable[str]) -> list[Trial]:
    """Every trial of the given files and folders (FileNotFoundError naming a missing one)."""
    trials: list[Trial] = []
    for path in csv_files(paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found")
        trials += read_file(path)
    return trials


def match(trials: Sequence[Trial], images: Sequence[tuple[str, str]], root: Path) -> list[int]:
    """For each trial the index of its image among ``images`` (``(class, file name)``): by file
    name, else by model-vs-human's image id, narrowed to the trial's category folder; its folder
    must be the trial's category. ValueError naming the file, line and field otherwise."""
    by_name: dict[str, list[int]] = {}
    by_id: dict[str, list[int]] = {}
    for i, (_, name) in enumerate(images):
        by_name.setdefault(name, []).append(i)
        by_id.setdefault(short_imagename(name), []).append(i)
    out = []
    for t in trials:
        found = by_name.get(t.imagename) or by_id.get(short_imagename(t.imagename), [])
        if len(found) > 1:
            found = [i for i in found if images[i][0] == t.category] or found
        if not found:
            raise ValueError(
                f"{t.where}: imagename {t.imagename!r} matches no image under "
                f"{root}/<class>/ (by file name, or by model-vs-human's image id "
                f"{short_imagename(t.imagename)!r})"
            )
        if len(found) > 1:
            shown = ", ".join(f"{images[i][0]}/{images[i][1]}" for i in found[:3])
            raise ValueError(
                f"{t.where}: imagename {t.imagename!r} matches {len(found)} images "
                f"under {root} ({shown}); give one external set per condition"
            )
        cls = images[found[0]][0]
        if cls != t.category:
            raise ValueError(
                f"{t.where}: category {t.category!r}, but its image "
                f"{images[found[0]][1]!r} is in the folder {cls!r}"
            )
        out.append(found[0])
    return out


def check(paths: Sequence[str], folder: str) -> None:
    """What can be checked while a submission is validated: every CSV that exists is in the
    layout and, where the set's folder exists too, every trial names one of its images. Missing
    files are left to the run (which says where they were looked for)."""
    files = [f for f in csv_files(paths) if f.exists()]
    trials = [t for f in files for t in read_file(f)]
    root = Path(folder).expanduser()
    if trials and root.is_dir():
        match(trials, [(c, f.name) for c, f in list_images(root)], root)


def _mean(values: Iterable[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def compare(trials: Sequence[Trial], image_of: Sequence[int], model_correct) -> dict[str, Any]:
    """Model against human observers per condition (see the module's docstring):
    ``model_correct[i]`` whether the model got image ``i`` right, ``image_of[k]`` trial k's
    image."""
    from bioprior.plugin import error_consistency

    groups: dict[str, dict[str, list[int]]] = {}
    for k, t in enumerate(trials):
        groups.setdefault(t.condition, {}).setdefault(t.subject, []).append(k)
    conditions: dict[str, Any] = {}
    for cond in sorted(groups, key=_natural):
        kappas, diffs, human, model = [], [], [], []
        for ks in groups[cond].values():
            h = [trials[k].correct for k in ks]
            m = [bool(model_correct[image_of[k]]) for k in ks]
            kappas.append(error_consistency(m, h))
            acc_h, acc_m = sum(h) / len(h), sum(m) / len(m)
            diffs.append((acc_m - acc_h) ** 2)
            human.append(acc_h)
            model.append(acc_m)
        conditions[cond] = {
            "error_consistency": _mean(kappas),
            "accuracy_difference": _mean(diffs),
            "human_accuracy": _mean(human),
            "model_accuracy": _mean(model),
            "subjects": len(groups[cond]),
            "undefined_kappa": sum(k is None for k in kappas),
            "trials": sum(len(ks) for ks in groups[cond].values()),
        }
    return {
        "error_consistency": _mean(c["error_consistency"] for c in conditions.values()),
        "accuracy_difference": _mean(c["accuracy_difference"] for c in conditions.values()),
        "human_accuracy": _mean(c["human_accuracy"] for c in conditions.values()),
        "model_accuracy": _mean(c["model_accuracy"] for c in conditions.values()),
        "subjects": len({t.subject for t in trials}),
        "trials": len(trials),
        "files": sorted({Path(t.file).name for t in trials}),
        "conditions": conditions,
    }


def _natural(text: str) -> list[Any]:
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", text)]
