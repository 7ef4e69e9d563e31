"""Tests for bioprior.registry.base.torchvision_compat; each check runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

MODULE_PATH = Path(__file__).resolve().parent.parent / "registry" / "torchvision_compat.py"

# Imports the module as `compat`, via the installed package when there is one, else by path.
_LOAD = f"""
import importlib.util
import sys
import warnings

if importlib.util.find_spec("bioprior") is not None:
    import bioprior.registry.base.torchvision_compat as compat
else:
    _spec = importlib.util.spec_from_file_location("torchvision_compat", {str(MODULE_PATH)!r})
    compat = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(compat)
"""


def _run(body: str) -> str:
    code = _LOAD + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def test_torchvision_and_timm_work_after_ensure() -> None:
    out = _run(
        """
        compat.ensure_torchvision()
        assert "torchvision" not in sys.modules, "ensure_torchvision must not import torchvision"
        import torch
        import torchvision
        import torchvision.datasets
        import torchvision.transforms.v2
        import timm

        model = timm.create_model("resnet18", pretrained=False).eval()
        with torch.no_grad():
            y = model(torch.randn(1, 3, 32, 32))
        print(tuple(y.shape))
        """
    )
    assert out.strip().splitlines()[-1] == "(1, 1000)"


def test_quiet_by_default_warns_once_when_verbose_and_ops_raise_ours() -> None:
    out = _run(
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = compat.ensure_torchvision()
            second = compat.ensure_torchvision()
            import torch
            import torchvision  # noqa: F401
        assert first is second and isinstance(first, bool), (first, second)
        ours = [w for w in caught if issubclass(w.category, compat.TorchvisionOpsUnavailableWarning)]
        assert not ours, [str(w.message) for w in ours]  # nothing said at import
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compat.set_verbose(True)
            compat.set_verbose(True)
        ours = [w for w in caught if issubclass(w.category, compat.TorchvisionOpsUnavailableWarning)]
        assert len(ours) == (1 if first else 0), [str(w.message) for w in ours]
        if first:  # where a detection op is used, it says why it cannot run
            assert "nms" in str(ours[0].message)
            try:
                torch.ops.torchvision.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
            except RuntimeError as exc:
                assert "torchvision::nms" in str(exc) and "compiled ops" in str(exc)
            else:
                raise AssertionError("a shimmed op must raise")
        print(first)
        """
    )
    # the decision is the truth about this machine: the ops were shimmed exactly when a plain
    # `import torchvision` (no shim) cannot load them
    assert out.strip().splitlines()[-1] == str(not _plain_torchvision_imports())


def _plain_torchvision_imports() -> bool:
    """Whether torchvision imports and its compiled nms op exists, with no shim, in a fresh
    interpreter."""
    code = "import torch, torchvision; assert hasattr(torch.ops.torchvision, 'nms')"
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300
    )
    return proc.returncode == 0


def test_no_shim_when_ops_already_registered() -> None:
    # Stands in for a build whose compiled ops load: torchvision::nms already exists.
    _run(
        """
        import torch

        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert compat.ensure_torchvision() is False
            assert compat.ensure_torchvision() is False
        assert not caught, [str(w.message) for w in caught]
        assert "torchvision" not in sys.modules
        """
    )
