"""neural_file: recorded responses or similarity matrices in the ``.npz`` format documented in
:mod:`bioprior.plugins.neural_data`; :func:`save_neural_file` writes one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bioprior.plugins.neural_data import SYNTHETIC_LABEL, NeuralFileParams


def resolve_path(path: str) -> Path:
    """The file a ``path`` parameter names: as given (``~`` expanded), else under the data root."""
    from bioprior.plugin import data_root

    given = Path(path).expanduser()
    if given.is_absolute() or given.exists():
        return given
    rooted = data_root() / given
    return rooted if rooted.exists() else given


def _bad(path: Path, field: str, message: str) -> ValueError:
    return ValueError(f"{path}: array {field!r}: {message}")


def load_neural_file(params: NeuralFileParams):
    """Read a neural data file (module docstring); errors name the file and the array."""
    import torch

    from bioprior.plugin import DataUnavailable, NeuralData, check_npz

    path = resolve_path(params.path)
    if not path.is_file():
        raise DataUnavailable(
            f"neural_file: {params.path} not found (looked in the working directory and the data "
            "root). Neural recordings are not shipped: write your own with "
            "bioprior.plugins.neural_data.files.save_neural_file (format: bioprior.plugins.neural_data), "
            "or use the synthetic_v1 data (synthetic, not recordings)"
        )
    check_npz(
        path
    )  # bioprior.registry.submissions.files: headers vs file size, before any allocation
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz file without pickles ({exc})") from None

    if "stimuli" not in arrays:
        raise _bad(path, "stimuli", "missing (required)")
    stimuli = arrays["stimuli"]
    if stimuli.ndim == 3:
        stimuli = stimuli[:, None]
    if stimuli.ndim != 4 or stimuli.shape[1] not in (1, 3) or len(stimuli) < 2:
        raise _bad(
            path, "stimuli", f"must be (N, H, W) or (N, 1|3, H, W), got {arrays['stimuli'].shape}"
        )
    if stimuli.dtype == np.uint8:
        stim = torch.from_numpy(np.ascontiguousarray(stimuli))
    elif np.issubdtype(stimuli.dtype, np.floating):
        if not np.isfinite(stimuli).all() or stimuli.min() < 0 or stimuli.max() > 1:
            raise _bad(path, "stimuli", "float stimuli must be finite and in [0, 1]")
        stim = torch.from_numpy(np.ascontiguousarray(stimuli, dtype=np.float32))
    else:
        raise _bad(path, "stimuli", f"must be uint8 or float, got {stimuli.dtype}")
    n = len(stim)

    responses = None
    if "responses" in arrays:
        r = arrays["responses"]
        if r.ndim == 2:
            r = r[None]
        if r.ndim != 3 or r.shape[1] != n or not np.issubdtype(r.dtype, np.number):
            raise _bad(
                path,
                "responses",
                f"must be (repeats, {n}, neurons) or ({n}, neurons) numbers, "
                f"got {arrays['responses'].shape} {arrays['responses'].dtype}",
            )
        r = r.astype(np.float32)
        if np.isinf(r).any():
            raise _bad(path, "responses", "infinite values (use NaN for missing repeats)")
        if np.isnan(r).all(0).any():
            raise _bad(path, "responses", "some stimulus/neuron has no finite repeat")
        responses = torch.from_numpy(r)

    similarity = None
    if "similarity" in arrays:
        s = arrays["similarity"]
        if s.shape != (n, n) or not np.issubdtype(s.dtype, np.number):
            raise _bad(path, "similarity", f"must be ({n}, {n}) numbers, got {s.shape} {s.dtype}")
        if not np.isfinite(s).all() or np.abs(s).max() > 1 + 1e-6:
            raise _bad(path, "similarity", "must be finite and in [-1, 1]")
        similarity = torch.from_numpy(s.astype(np.float32))
    if responses is None and similarity is None:
        raise _bad(path, "responses", "neither 'responses' nor 'similarity' is present")

    synthetic = params.synthetic or bool(arrays.get("synthetic", np.asarray(False)))
    text = str(arrays["description"]) if "description" in arrays else ""
    label = f" ({SYNTHETIC_LABEL})" if synthetic else ""
    return NeuralData(
        name=f"neural_file {path.name}{label}",
        stimuli=stim,
        responses=responses,
        similarity=similarity,
        synthetic=synthetic,
        description=(f"{SYNTHETIC_LABEL}: " if synthetic else "") + (text or str(path)),
    )


def save_neural_file(path: str | Path, data) -> Path:
    """Write a :class:`~bioprior.plugin.NeuralData` in the ``neural_file`` format."""
    arrays: dict[str, np.ndarray] = {"stimuli": data.stimuli.cpu().numpy()}
    if data.responses is not None:
        arrays["responses"] = data.responses.cpu().float().numpy()
    if data.similarity is not None:
        arrays["similarity"] = data.similarity.cpu().float().numpy()
    arrays["synthetic"] = np.asarray(bool(data.synthetic))
    arrays["description"] = np.asarray(str(data.description))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path
