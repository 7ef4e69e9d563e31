"""Load, validate and expand submission files.

Every problem becomes a :class:`SubmissionError` printed as ``FILE:LINE: field.path: message``:
YAML syntax and hostile input (see ``safe_yaml``), non-finite numbers, schema errors (pydantic),
unknown plugin names (with close matches), plugin parameters (each plugin's own schema), every
plugin a plugin's parameters name (attacks, surrogates, baselines, neural data), the files they
name (``filecheck``) and sweep paths. Each sweep point is validated too; the number of points is
checked before the grid is expanded (:func:`max_sweep_points`). Errors are de-duplicated, capped
at :data:`MAX_ERRORS` (the last line says how many more) and every echoed value is truncated.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from bioprior.registry.base import safe_yaml
from bioprior.registry.base.safe_yaml import preview
from bioprior.registry.hooks.entries import PluginEntry
from bioprior.registry.hooks.loading import Registry, UnknownPluginError
from bioprior.registry.submissions.files import check_fields, models_in
from bioprior.registry.submissions.schema import (
    MAX_NAME,
    PLUGIN_KIND,
    PLUGIN_NAME_PATTERN,
    PluginRef,
    Submission,
)

MAX_ERRORS = 20
MAX_LINE = 300
DEFAULT_MAX_SWEEP_POINTS = 1000
MAX_REF_DEPTH = 4


def max_sweep_points() -> int:
    """Most sweep points one submission may expand to: ``$BIOPRIOR_MAX_SWEEP_POINTS`` or 1,000."""
    try:
        return max(1, int(os.environ.get("BIOPRIOR_MAX_SWEEP_POINTS", "")))
    except ValueError:
        return DEFAULT_MAX_SWEEP_POINTS


@dataclass(frozen=True)
class SubmissionError:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        if self.message.startswith("... and "):  # the cap's last line
            return f"{self.file}: {self.message}"
        path = self.path or "<root>"
        path = path if len(path) <= 120 else path[:117] + "..."
        text = f"{self.file}:{self.line}: {path}: {' '.join(self.message.split())}"
        return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


class InvalidSubmission(Exception):
    """One or more errors: de-duplicated and capped at :data:`MAX_ERRORS` (plus a last line
    saying how many more there were)."""

    def __init__(self, errors: list[SubmissionError]):
        unique = list(dict.fromkeys(errors))
        if len(unique) > MAX_ERRORS:
            last = unique[MAX_ERRORS - 1]
            more = len(unique) - (MAX_ERRORS - 1)
            unique = unique[: MAX_ERRORS - 1] + [
                SubmissionError(last.file, last.line, "", f"... and {more} more errors")
            ]
        self.errors = unique
        super().__init__("\n".join(map(str, unique)))


@dataclass(frozen=True)
class Component:
    """A plugin entry with validated parameters; ``spec`` is what enters content keys."""

    entry: PluginEntry
    params: BaseModel
    source: Component | None = None  # the dataset a derivation is applied to

    @property
    def spec(self) -> dict[str, Any]:
        spec = {
            "name": self.entry.name,
            "version": self.entry.version,
            "params": self.params.model_dump(mode="json"),
        }
        if self.source is not None:
            spec["params"]["source"] = self.source.spec
        return spec

    @property
    def versions(self) -> dict[str, str]:
        """Plugin provenance: ``kind:name`` -> ``version (provider provider_version)``."""
        out = {
            f"{self.entry.kind}:{self.entry.name}": f"{self.entry.version} "
            f"({self.entry.provider} {self.entry.provider_version})".strip()
        }
        if self.source is not None:
            out.update(self.source.versions)
        return out


@dataclass
class Variant:
    """One point of a submission's sweep, fully resolved against the registry."""

    assignments: dict[str, Any]
    submission: Submission
    model: Component
    constraints: list[Component]
    dataset: Component
    benchmarks: list[Component]


@dataclass
class LoadedSubmission:
    path: str
    submission: Submission
    variants: list[Variant] = field(default_factory=list)


# -- YAML with line numbers ----------------------------------------------------------------
def _line_of(node: yaml.Node | None, path: tuple[Any, ...]) -> int:
    """The 1-based line of the deepest node along ``path`` (the root when nothing matches)."""
    if node is None:
        return 1
    line = node.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    node = value
                    line = key.start_mark.line + 1
                    break
            else:
                return line
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p)[:60] for p in path)


def _pydantic_errors(
    file: str, root: yaml.Node | None, exc: ValidationError, prefix: tuple[Any, ...] = ()
) -> list[SubmissionError]:
    errors = []
    for err in exc.errors():
        loc = prefix + tuple(
            p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))
        )
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif (
            "input" in err
            and err["type"] not in {"missing"}
            and not isinstance(err["input"], (dict, list))
        ):
            msg = f"{msg} (got {preview(err['input'])})"
        errors.append(SubmissionError(file, _line_of(root, loc), _dotted(loc), msg))
    return errors


# -- resolving plugins -----------------------------------------------------------------------
_PLUGIN_NAME = re.compile(PLUGIN_NAME_PATTERN)


def _param_errors(
    exc: ValidationError, path: tuple[Any, ...], errors: list[tuple[tuple, str]]
) -> None:
    for err in exc.errors():
        loc = path + tuple(p for p in err["loc"] if not str(p).startswith("function-"))
        msg = "unknown parameter" if err["type"] == "extra_forbidden" else err["msg"]
        shown = err["type"] not in {"extra_forbidden", "missing"} and "input" in err
        if shown and not isinstance(err["input"], (dict, list)):
            msg = f"{msg} (got {preview(err['input'])})"
        errors.append((loc, msg))


def resolve_component(
    registry: Registry,
    kind: str,
    ref: PluginRef,
    path: tuple[Any, ...],
    errors: list[tuple[tuple, str]],
) -> Component | None:
    """Look ``ref`` up in the registry and validate its params, every plugin they name and every
    file they name; problems go to ``errors``."""
    entry = _lookup(registry, kind, ref.name, path + ("name",), errors)
    if entry is None:
        return None
    params = dict(ref.params)
    source_ref = params.pop("source", None) if entry.extra.get("derivation") else None
    source = None
    if entry.extra.get("derivation"):
        try:
            src = PluginRef.model_validate(
                PluginRef.coerce(source_ref or entry.extra["default_source"])
            )
        except ValidationError as exc:
            errors.append((path + ("params", "source"), _first_msg(exc)))
            return None
        source = resolve_component(registry, kind, src, path + ("params", "source"), errors)
        if source is None:
            return None
    try:
        parsed = entry.parse_params(params, registry)
    except ValidationError as exc:
        _param_errors(exc, path + ("params",), errors)
        return None
    before = len(errors)
    check_references(registry, parsed, path + ("params",), errors)
    if len(errors) > before:
        return None
    return Component(entry, parsed, source)


def _lookup(
    registry: Registry, kind: str, name: Any, loc: tuple[Any, ...], errors: list[tuple[tuple, str]]
) -> PluginEntry | None:
    if not isinstance(name, str) or len(name) > MAX_NAME or not _PLUGIN_NAME.match(name):
        errors.append((loc, f"not a plugin name (got {preview(name)})"))
        return None
    try:
        entry = registry.get(kind, name)
    except UnknownPluginError as exc:
        errors.append((loc, str(exc)))
        return None
    except (ValueError, TypeError) as exc:  # a family member the family refuses
        errors.append((loc, " ".join(str(exc).split())))
        return None
    if "family" in entry.extra:
        errors.append((loc, f"{name!r} is a family: name a member, {name}:<name>"))
        return None
    missing = missing_requirements(entry)
    if missing:
        errors.append((loc, f"{name} needs {missing}"))
        return None
    return entry


def missing_requirements(entry: PluginEntry) -> str:
    """What an entry's ``extra={"requires": {module: install hint}}`` lacks here, as one
    sentence ("" when every module is importable): an optional dependency is bad input when a
    submission names the plugin, before anything trains."""
    requires = entry.extra.get("requires")
    if not isinstance(requires, dict):
        return ""
    absent = []
    for module, hint in requires.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            absent.append(f'{module}, which is not installed: pip install "{hint}"')
    return "; ".join(absent)


def check_references(
    registry: Registry,
    params: BaseModel,
    path: tuple[Any, ...],
    errors: list[tuple[tuple, str]],
    depth: int = 0,
) -> None:
    """Resolve every plugin that ``params`` names (through ``registry``), validate its params
    (recursively), and check every file that a marked field names (``filecheck``)."""
    for loc, msg in check_fields(params):
        errors.append((path + loc, msg))
    if depth >= MAX_REF_DEPTH:
        return
    for loc, kind, name, raw, params_loc in _references(params):
        entry = _lookup(registry, kind, name, path + loc, errors)
        if entry is None:
            continue
        try:
            parsed = entry.parse_params(raw)
        except ValidationError as exc:
            _param_errors(exc, path + params_loc, errors)
            continue
        check_references(registry, parsed, path + params_loc, errors, depth + 1)


def _references(model: BaseModel, depth: int = 0):
    """``(name location, kind, name, params, params location)`` of every plugin reference in a
    parsed parameter model: ``{name, params}`` models with a ``plugin_kind`` class variable, and
    fields marked ``json_schema_extra={"plugin_kind": kind}`` (a reference model, or a bare name
    with ``"params_field"`` naming the sibling that holds its parameters)."""
    if depth > 8:
        return
    for fname, info in type(model).model_fields.items():
        value = getattr(model, fname, None)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        kind = extra.get(PLUGIN_KIND)
        if isinstance(kind, str) and isinstance(value, str):
            pfield = extra.get("params_field")
            raw = getattr(model, pfield, None) if isinstance(pfield, str) else None
            yield (fname,), kind, value, raw or {}, ((pfield,) if pfield else (fname,))
            continue
        for loc, item in models_in(value):
            item_kind = kind if isinstance(kind, str) else getattr(type(item), PLUGIN_KIND, None)
            if isinstance(item_kind, str) and hasattr(item, "name"):
                raw = getattr(item, "params", None)
                base = (fname, *loc)
                yield (*base, "name"), item_kind, item.name, dict(raw or {}), (*base, "params")
            else:
                for sub in _references(item, depth + 1):
                    yield ((fname, *loc, *sub[0]), sub[1], sub[2], sub[3], (fname, *loc, *sub[4]))


def non_finite(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple, str]]:
    """Locations of NaN / infinite numbers anywhere in a raw submission (no parameter of any
    plugin is meant to be one, and they would poison content keys and JSON results)."""
    found: list[tuple[tuple, str]] = []
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, path)]
    while stack and len(found) < MAX_ERRORS:
        value, where = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            found.append((where, f"must be a finite number (got {value})"))
        elif isinstance(value, dict):
            stack.extend((v, (*where, k)) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((v, (*where, i)) for i, v in reversed(list(enumerate(value))))
    return found


def _first_msg(exc: ValidationError) -> str:
    return exc.errors()[0]["msg"]


def resolve_variant(
    registry: Registry, sub: Submission, assignments: dict[str, Any]
) -> tuple[Variant | None, list[tuple[tuple, str]]]:
    errors: list[tuple[tuple, str]] = []
    model = resolve_component(registry, "model", sub.model, ("model",), errors)
    constraints = [
        resolve_component(registry, "constraint", c, ("constraints", i), errors)
        for i, c in enumerate(sub.constraints)
    ]
    dataset = resolve_component(
        registry, "dataset", sub.training.dataset, ("training", "dataset"), errors
    )
    benchmarks = [
        resolve_component(registry, "benchmark", b, ("benchmarks", i), errors)
        for i, b in enumerate(sub.benchmarks)
    ]
    for i, (c, ref) in enumerate(zip(constraints, sub.constraints)):
        needed = c.entry.requires_model_params if c and ref.enabled else ()
        missing = [n for n in needed if model and n not in model.entry.params.model_fields]
        if missing:
            names = ", ".join(missing)
            message = f"{c.entry.name} needs model parameter(s) {names}, which {model.entry.name} does not have"
            errors.append((("constraints", i, "name"), message))
    if errors:
        return None, errors
    enabled = [c for c, ref in zip(constraints, sub.constraints) if ref.enabled]
    return Variant(assignments, sub, model, enabled, dataset, benchmarks), []  # type: ignore[arg-type]


# -- sweeps ----------------------------------------------------------------------------------
def _set_path(data: Any, path: str, value: Any) -> Any:
    """``data`` with ``data[path] = value`` for a dotted path: the containers along the path are
    copied, the rest is shared (no deep copy per sweep point); missing mappings are created only
    inside params."""
    parts = path.split(".")

    def put(node: Any, i: int) -> Any:
        part = parts[i]
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise KeyError(f"no list item {where!r} to sweep")
            key: Any = int(part)
            copy_: Any = list(node)
        elif isinstance(node, dict):
            key = part
            copy_ = dict(node)
        else:
            raise KeyError(f"cannot sweep inside {'.'.join(parts[:i])!r}")
        if i == len(parts) - 1:
            copy_[key] = value
            return copy_
        child = copy_[key] if isinstance(copy_, list) else copy_.get(key)
        if isinstance(copy_, dict) and child is None:
            if part != "params" and "params" not in parts[:i]:
                raise KeyError(f"no field {where!r} to sweep")
            child = {}
        copy_[key] = put(child, i + 1)
        return copy_

    return put(data, 0)


def grid_size(grid: dict[str, list[Any]]) -> int:
    """How many points :func:`expand_grid` would give (without expanding)."""
    return math.prod(len(values) for values in grid.values()) if grid else 0


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of a grid; a key ``a,b`` zips paths with values ``[[a1, b1], ...]``."""
    axes = []
    for key, values in grid.items():
        paths = [p.strip() for p in key.split(",")]
        if len(paths) == 1:
            axes.append([{paths[0]: v} for v in values])
        else:
            for v in values:
                if not isinstance(v, list) or len(v) != len(paths):
                    raise ValueError(
                        f"{key!r} zips {len(paths)} paths: each value must be a list of "
                        f"{len(paths)} (got {preview(v)})"
                    )
            axes.append([dict(zip(paths, v, strict=True)) for v in values])
    points = []
    for combo in itertools.product(*axes):
        point: dict[str, Any] = {}
        for part in combo:
            point.update(part)
        points.append(point)
    return points


def load_submission(path: str | Path, registry: Registry) -> LoadedSubmission:
    """Parse, validate and expand one submission file; raise :class:`InvalidSubmission`.

    The file is read by :mod:`safe_yaml` (regular files only, size, UTF-8, nesting, aliases,
    duplicate keys, tags and integer limits)."""
    file = str(path)
    try:
        raw, root = safe_yaml.load_file(path)
    except safe_yaml.YAMLInputError as exc:
        raise InvalidSubmission([SubmissionError(file, exc.line, "", exc.message)]) from None
    if not isinstance(raw, dict):
        raise InvalidSubmission(
            [SubmissionError(file, 1, "", "a submission must be a YAML mapping")]
        )
    return validate_submission_dict(raw, registry, file=file, root=root)


def validate_submission_dict(
    raw: dict[str, Any],
    registry: Registry,
    file: str = "<submission>",
    root: yaml.Node | None = None,
) -> LoadedSubmission:
    bad_numbers = non_finite(raw)
    if bad_numbers:
        raise InvalidSubmission(
            [SubmissionError(file, _line_of(root, p), _dotted(p), m) for p, m in bad_numbers]
        )
    try:
        sub = Submission.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSubmission(_pydantic_errors(file, root, exc)) from None
    limit = max_sweep_points()
    sizes = [grid_size(g) for g in sub.grids]
    if sum(sizes) > limit:
        shape = " + ".join(" x ".join(str(len(v)) for v in g.values()) for g in sub.grids if g)
        raise InvalidSubmission(
            [
                SubmissionError(
                    file,
                    _line_of(root, ("sweep",)),
                    "sweep",
                    f"{sum(sizes):,} points ({preview(shape, 80)}) is over the limit of {limit:,}; "
                    "split the submission or raise BIOPRIOR_MAX_SWEEP_POINTS",
                )
            ]
        )
    base_variant, base_errors = resolve_variant(registry, sub, {})
    errors = [SubmissionError(file, _line_of(root, p), _dotted(p), m) for p, m in base_errors]
    if errors:
        raise InvalidSubmission(errors)
    loaded = LoadedSubmission(file, sub)
    seen_points: set[str] = set()
    repeated: dict[tuple[int, str], list[Any]] = {}  # the same error at many points: one line
    for g, grid in enumerate(sub.grids):
        grid_path: tuple[Any, ...] = ("sweep", g) if isinstance(sub.sweep, list) else ("sweep",)
        try:
            points = expand_grid(grid)
        except (ValueError, TypeError) as exc:
            raise InvalidSubmission(
                [
                    SubmissionError(
                        file,
                        _line_of(root, grid_path),
                        _dotted(grid_path),
                        f"bad zipped sweep: {exc}",
                    )
                ]
            ) from None
        for point in points:
            ident = repr(sorted(point.items(), key=lambda kv: kv[0]))
            if ident in seen_points:
                continue
            seen_points.add(ident)
            variant, errs = _variant_at(raw, point, registry, file, root, grid_path)
            for err, where in errs:
                key = (err.line, f"{err.path}: {err.message}")
                if key in repeated:
                    repeated[key][1] += 1
                else:
                    repeated[key] = [(err, where), 0]
            if variant is not None:
                loaded.variants.append(variant)
    for (err, where), others in repeated.values():
        also = f" (and {others} more sweep points)" if others else ""
        path = f"sweep ({where}): {err.path}" if where else err.path
        errors.append(SubmissionError(err.file, err.line, path, err.message + also))
    if errors:
        raise InvalidSubmission(errors)
    if not loaded.variants:
        loaded.variants.append(base_variant)  # type: ignore[arg-type]
    return loaded


def _variant_at(
    raw: dict[str, Any],
    point: dict[str, Any],
    registry: Registry,
    file: str,
    root: yaml.Node | None,
    grid_path: tuple[Any, ...],
) -> tuple[Variant | None, list[tuple[SubmissionError, str]]]:
    """The variant at one sweep point, or its errors as ``(error, point description)``."""
    data = {k: v for k, v in raw.items() if k != "sweep"}
    for key, value in point.items():
        line = _line_of(root, grid_path + (key,))
        try:
            data = _set_path(data, key, value)
        except KeyError as exc:
            return None, [(SubmissionError(file, line, f"sweep.{key}", exc.args[0]), "")]
    where = ", ".join(f"{k}={preview(v, 30)}" for k, v in point.items())
    where = where if len(where) <= 100 else where[:97] + "..."
    try:
        sub = Submission.model_validate(data)
    except ValidationError as exc:
        return None, [
            (SubmissionError(file, _line_of(root, grid_path), e.path, e.message), where)
            for e in _pydantic_errors(file, None, exc)
        ]
    variant, errs = resolve_variant(registry, sub, point)
    return variant, [
        (
            SubmissionError(
                file, _line_of(root, grid_path + (_sweep_key_for(p, point),)), _dotted(p), m
            ),
            where,
        )
        for p, m in errs
    ]


def _sweep_key_for(path: tuple[Any, ...], point: dict[str, Any]) -> str:
    dotted = _dotted(path)
    for key in point:
        if dotted.startswith(key) or key.startswith(dotted):
            return key
    return next(iter(point), "")
