"""Provenance of a result: the software, threads and hardware that produced it.

Stored with every row (``results.provenance``): Python, torch, torchvision, numpy and foolbox
(the attack library) versions, torch's intra-op thread count, the CUDA and cuDNN versions and
the GPU's name when the job ran on CUDA, the CPU (its model and the instruction set torch's kernels
dispatch to: oneDNN picks its convolution kernels by it, so two hosts with the same software can
train to different fp32 numbers), and the project's git commit (and whether the checkout
had uncommitted changes) when bioprior runs from a git checkout. Versions come from the imported modules
(with their build tags) or the installed distributions' metadata: nothing heavy is imported just
to record them.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchvision", "numpy", "foolbox", "timm", "bioprior")


def _version(dist: str) -> str | None:
    """The imported module's ``__version__`` (it carries the build, e.g. ``+cu130``), else the
    installed distribution's."""
    module = sys.modules.get(dist)
    if isinstance(getattr(module, "__version__", None), str):
        return module.__version__
    built = _version_file(dist)
    if built:
        return built
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _version_file(dist: str) -> str | None:
    """``__version__`` from the package's ``version.py`` without importing the package (torch's
    and torchvision's carry the build tag there; importing torchvision may fail on this torch)."""
    import importlib.util
    import re

    try:
        spec = importlib.util.find_spec(dist)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "version.py"
        if path.is_file():
            found = re.search(
                r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", path.read_text(), re.MULTILINE
            )
            if found:
                return found.group(1)
    return None


@lru_cache(maxsize=1)
def git_commit() -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the checkout bioprior is imported from, else None."""
    root = Path(__file__).resolve().parents[2]  # registry/base/ -> the repository root
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha, "dirty": bool(status.strip())} if sha else None


@lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name with its family and model numbers where Linux says them (a VM's
    "Intel Xeon Processor" alone names no generation), else ``platform.processor()``."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():
                break  # the first processor is enough
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']} model {fields['model']})"
    return name


@lru_cache(maxsize=1)
def _software() -> dict[str, Any]:
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(terse=True),
    }
    out.update({name: _version(name) for name in PACKAGES})
    git = git_commit()
    if git is not None:
        out["git_commit"] = git["commit"]
        out["git_dirty"] = git["dirty"]
    return out


def torch_threads() -> int | None:
    """torch's CPU thread count in this process; None where torch was never imported."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def capture(device: str = "", threads: int | None = None) -> dict[str, Any]:
    """The provenance of a job that ran on ``device`` ("cpu", "cuda:0", ...) with torch's
    ``threads`` (default: this process's), now."""
    out = dict(_software())
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch_num_threads"] = threads or torch_threads()
        out["cpu"] = cpu_name()
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        if device.startswith("cuda"):
            out["cuda"] = torch.version.cuda
            out["cudnn"] = torch.backends.cudnn.version()
            try:
                out["gpu"] = torch.cuda.get_device_name(torch.device(device))
            except (RuntimeError, AssertionError, ValueError):
                out["gpu"] = None
    return out
