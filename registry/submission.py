"""Load, validate and expand submission files.

Every problem becomes a :class:`SubmissionError` printed as ``FILE:LINE: field.path: message``:
YAML syntax, schema errors (pydantic), unknown plugin names (with close matches), plugin
parameters (each plugin's own schema) and sweep paths. Each sweep point is validated too.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .entries import PluginEntry
from .plugins import Registry, UnknownPluginError
from .schemas import PluginRef, Submission


@dataclass(frozen=True)
class SubmissionError:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path or '<root>'}: {self.message}"


class InvalidSubmission(Exception):
    def __init__(self, errors: list[SubmissionError]):
        self.errors = errors
        super().__init__("\n".join(map(str, errors)))


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
    return ".".join(str(p) for p in path)


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
            msg = f"{msg} (got {err['input']!r})"
        errors.append(SubmissionError(file, _line_of(root, loc), _dotted(loc), msg))
    return errors


# -- resolving plugins -----------------------------------------------------------------------
def resolve_component(
    registry: Registry,
    kind: str,
    ref: PluginRef,
    path: tuple[Any, ...],
    errors: list[tuple[tuple, str]],
) -> Component | None:
    """Look ``ref`` up in the registry and validate its params; problems go to ``errors``."""
    try:
        entry = registry.get(kind, ref.name)
    except UnknownPluginError as exc:
        errors.append((path + ("name",), str(exc)))
        return None
    if "family" in entry.extra:
        errors.append(
            (path + ("name",), f"{ref.name!r} is a family: name a member, {ref.name}:<name>")
        )
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
        for err in exc.errors():
            loc = path + ("params",) + tuple(err["loc"])
            msg = "unknown parameter" if err["type"] == "extra_forbidden" else err["msg"]
            if err["type"] not in {"extra_forbidden", "missing"}:
                msg = f"{msg} (got {err.get('input')!r})"
            errors.append((loc, msg))
        return None
    return Component(entry, parsed, source)


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
def _set_path(data: Any, path: str, value: Any) -> None:
    """Set ``data[path] = value`` for a dotted path; missing mappings are created only in params."""
    parts = path.split(".")
    node = data
    for i, part in enumerate(parts):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise KeyError(f"no list item {where!r} to sweep")
            key: Any = int(part)
        elif isinstance(node, dict):
            key = part
        else:
            raise KeyError(f"cannot sweep inside {'.'.join(parts[:i])!r}")
        if i == len(parts) - 1:
            node[key] = value
            return
        if isinstance(node, dict) and node.get(key) is None:
            if part != "params" and "params" not in parts[:i]:
                raise KeyError(f"no field {where!r} to sweep")
            node[key] = {}
        node = node[key]


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of a grid; a key ``a,b`` zips paths with values ``[[a1, b1], ...]``."""
    axes = []
    for key, values in grid.items():
        paths = [p.strip() for p in key.split(",")]
        if len(paths) == 1:
            axes.append([{paths[0]: v} for v in values])
        else:
            axes.append([dict(zip(paths, v, strict=True)) for v in values])
    points = []
    for combo in itertools.product(*axes):
        point: dict[str, Any] = {}
        for part in combo:
            point.update(part)
        points.append(point)
    return points


def load_submission(path: str | Path, registry: Registry) -> LoadedSubmission:
    """Parse, validate and expand one submission file; raise :class:`InvalidSubmission`."""
    file = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidSubmission(
            [SubmissionError(file, 1, "", f"cannot read file: {exc.strerror}")]
        ) from None
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidSubmission(
            [SubmissionError(file, line, "", f"invalid YAML: {problem}")]
        ) from None
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
    try:
        sub = Submission.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSubmission(_pydantic_errors(file, root, exc)) from None
    base_variant, base_errors = resolve_variant(registry, sub, {})
    errors = [SubmissionError(file, _line_of(root, p), _dotted(p), m) for p, m in base_errors]
    if errors:
        raise InvalidSubmission(errors)
    loaded = LoadedSubmission(file, sub)
    seen_points: set[str] = set()
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
            errors.extend(errs)
            if variant is not None:
                loaded.variants.append(variant)
    if errors:
        raise InvalidSubmission(list(dict.fromkeys(errors)))
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
) -> tuple[Variant | None, list[SubmissionError]]:
    data = copy.deepcopy(raw)
    data.pop("sweep", None)
    for key, value in point.items():
        line = _line_of(root, grid_path + (key,))
        try:
            _set_path(data, key, value)
        except KeyError as exc:
            return None, [SubmissionError(file, line, f"sweep.{key}", exc.args[0])]
    where = ", ".join(f"{k}={v!r}" for k, v in point.items())
    try:
        sub = Submission.model_validate(data)
    except ValidationError as exc:
        return None, [
            SubmissionError(
                file, _line_of(root, grid_path), f"sweep ({where}): {e.path}", e.message
            )
            for e in _pydantic_errors(file, None, exc)
        ]
    variant, errs = resolve_variant(registry, sub, point)
    return variant, [
        SubmissionError(
            file,
            _line_of(root, grid_path + (_sweep_key_for(p, point),)),
            f"sweep ({where}): {_dotted(p)}",
            m,
        )
        for p, m in errs
    ]


def _sweep_key_for(path: tuple[Any, ...], point: dict[str, Any]) -> str:
    dotted = _dotted(path)
    for key in point:
        if dotted.startswith(key) or key.startswith(dotted):
            return key
    return next(iter(point), "")
