"""``bioprior new-plugin``: render a ready plugin package from the templates shipped here
(pyproject with the entry point, the module, a conformance test, a README, a CI workflow)."""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATES = Path(__file__).parent / "templates"
KINDS = ("model", "constraint", "dataset", "benchmark")
NAME = re.compile(r"^[a-z][a-z0-9]*([-_][a-z0-9]+)*$")


class ScaffoldError(ValueError):
    """Bad NAME / --kind / destination."""


def names(name: str) -> dict[str, str]:
    """``my-noise`` -> dist ``bioprior-my-noise``, module ``bioprior_my_noise``, entry
    ``my_noise``, class ``MyNoise``."""
    if not NAME.match(name):
        raise ScaffoldError(
            f"NAME: {name!r} is not a package name (lowercase letters, digits, '-' or '_', "
            "starting with a letter)"
        )
    base = re.sub(r"^bioprior[-_]", "", name).replace("-", "_")
    return {
        "dist": f"bioprior-{base.replace('_', '-')}",
        "module": f"bioprior_{base}",
        "entry": base,
        "camel": "".join(part.capitalize() for part in base.split("_")),
    }


def render_plugin(name: str, kind: str = "constraint", dest: Path | str = ".") -> Path:
    """Write the package for ``name`` into ``dest``/<dist>; returns that folder."""
    import jinja2

    if kind not in KINDS:
        raise ScaffoldError(f"--kind: must be one of {', '.join(KINDS)} (got {kind!r})")
    values = names(name)
    values["kind"] = kind
    values["description"] = f"A bioprior {kind} plugin ({values['entry']})."
    root = Path(dest) / values["dist"]
    if root.exists() and any(root.iterdir()):
        raise ScaffoldError(f"--output: {root} exists and is not empty")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    files: dict[str, str] = {}
    base = TEMPLATES / "plugin"
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        files[str(path.relative_to(base))] = str(path.relative_to(TEMPLATES))
    for path in sorted((TEMPLATES / "kinds" / kind).glob("*.j2")):
        files[f"src/__module__/{path.name}"] = str(path.relative_to(TEMPLATES))
    for target, template in files.items():
        out = root / target.replace("__module__", values["module"]).removesuffix(".j2")
        out.parent.mkdir(parents=True, exist_ok=True)
        if template.endswith(".j2"):
            out.write_text(env.get_template(template.replace("\\", "/")).render(**values))
        else:
            out.write_bytes((TEMPLATES / template).read_bytes())
    return root
