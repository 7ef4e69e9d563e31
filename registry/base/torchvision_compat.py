"""Let ``import torchvision`` work when torchvision's compiled ``_C`` ops cannot load.

A CUDA torchvision wheel next to a CPU-only torch fails to load ``_C``; torchvision's import
then dies in ``register_fake("torchvision::nms")`` with ``operator torchvision::nms does not
exist``, taking ``import timm`` with it. :func:`ensure_torchvision`, called before torchvision is
imported, tries to load ``_C`` (without importing torchvision) and, only if that fails, defines
the ``torchvision::`` op schemas: the import works, the ops stay inert (``torchvision.ops.nms``
raises torchvision's own "Couldn't load custom C++ ops" error, and calling an op through
``torch.ops.torchvision`` raises ours). Nothing is said at import: only detection ops need the
compiled ops, and none of bioprior's plugins use them. :func:`set_verbose` (``bioprior
--verbose``) emits the :class:`TorchvisionOpsUnavailableWarning` once.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import warnings

import torch

__all__ = ["TorchvisionOpsUnavailableWarning", "ensure_torchvision", "set_verbose"]

# Schemas as torchvision's csrc/ops register them (checked against the 0.28 ``_C`` library).
_ROI = "float spatial_scale, SymInt pooled_height, SymInt pooled_width"
_BCHW = "SymInt batch_size, SymInt channels, SymInt height, SymInt width"
_CONV = """Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, SymInt stride_w,
    SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups,
    SymInt offset_groups, bool use_mask"""
_SCHEMAS: list[str] = [
    " ".join(schema.split())  # unwrap the lines below
    for schema in f"""
    nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor;
    qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor;
    box_iou_rotated(Tensor boxes1, Tensor boxes2) -> Tensor;
    roi_align(Tensor input, Tensor rois, {_ROI}, int sampling_ratio, bool aligned) -> Tensor;
    _roi_align_backward(Tensor grad, Tensor rois, {_ROI}, {_BCHW}, int sampling_ratio,
        bool aligned) -> Tensor;
    qroi_align(Tensor input, Tensor rois, float input_scale, int input_zero_point,
        float rois_scale, int rois_zero_point, {_ROI}, int sampling_ratio, bool aligned) -> Tensor;
    roi_pool(Tensor input, Tensor rois, {_ROI}) -> (Tensor, Tensor);
    _roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, {_ROI}, {_BCHW}) -> Tensor;
    ps_roi_align(Tensor input, Tensor rois, {_ROI}, int sampling_ratio) -> (Tensor, Tensor);
    _ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, {_ROI},
        int sampling_ratio, {_BCHW}) -> Tensor;
    ps_roi_pool(Tensor input, Tensor rois, {_ROI}) -> (Tensor, Tensor);
    _ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, {_ROI},
        {_BCHW}) -> Tensor;
    deform_conv2d(Tensor input, {_CONV}) -> Tensor;
    _deform_conv2d_backward(Tensor grad, Tensor input, {_CONV})
        -> (Tensor, Tensor, Tensor, Tensor, Tensor)
    """.split(";")
]

NOTICE = (
    "torchvision's compiled ops (_C extension) are unavailable with this torch build; "
    "defined inert torchvision:: op schemas so torchvision imports, but detection ops "
    "such as nms and roi_align will not work (install the torchvision build that matches torch)"
)

_decision: bool | None = None
_verbose = False
_warned = False
_lib: torch.library.Library | None = None  # must stay alive, or the schemas are dropped


class TorchvisionOpsUnavailableWarning(RuntimeWarning):
    """torchvision's compiled ops could not be loaded; detection ops will not work."""


def _ops_load() -> bool:
    """True if torchvision is absent or its ``_C`` extension loads (as torchvision.extension)."""
    spec = importlib.util.find_spec("torchvision")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations or hasattr(torch.ops.torchvision, "nms"):
        return True
    lib_dir = next(iter(spec.submodule_search_locations))
    loader = (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES)
    ext = importlib.machinery.FileFinder(lib_dir, loader).find_spec("_C")
    if ext is None or ext.origin is None:
        return False
    try:
        if os.name == "nt":
            os.add_dll_directory(lib_dir)
        torch.ops.load_library(ext.origin)
    except (ImportError, OSError):
        return False
    return True


def _unavailable(name: str):
    def kernel(*args, **kwargs):
        raise RuntimeError(f"torchvision::{name}: {NOTICE}")

    return kernel


def _warn() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(NOTICE, TorchvisionOpsUnavailableWarning, stacklevel=3)


def set_verbose(flag: bool = True) -> None:
    """Say once whether the ops are shimmed (deciding now, as ``bioprior --verbose`` asks)."""
    global _verbose
    _verbose = flag
    if flag and ensure_torchvision():
        _warn()


def ensure_torchvision() -> bool:
    """Call before importing torchvision. Returns True if the ops had to be shimmed."""
    global _decision, _lib
    if _decision is not None:
        return _decision
    if _ops_load():
        _decision = False
        return _decision
    _lib = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        name = schema.split("(", 1)[0]
        if not hasattr(torch.ops.torchvision, name):
            _lib.define(schema)
            _lib.impl(name, _unavailable(name), "CompositeExplicitAutograd")
    _decision = True
    if _verbose:
        _warn()
    return _decision
