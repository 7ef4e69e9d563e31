"""Trial-by-trial behaviour: which test images an evaluation got right, stored compactly, and the
error consistency of two decision makers on the same images.

**Error consistency** (Geirhos, Meding & Wichmann 2020, "Beyond accuracy: quantifying
trial-by-trial behaviour of CNNs and humans by measuring error consistency", NeurIPS, Eq. 1-3):
Cohen's kappa on trial-by-trial correctness, the agreement beyond what the two accuracies alone
predict. With ``c_obs`` the fraction of trials where both are right or both wrong and ``p1``,
``p2`` the accuracies::

    c_exp = p1 * p2 + (1 - p1) * (1 - p2)        # two independent observers with these accuracies
    kappa = (c_obs - c_exp) / (1 - c_exp)

1: the same errors; 0: no more agreement than chance; negative: fewer common errors than chance.
On two binary raters (right / wrong) this is exactly Cohen's kappa. It is undefined when
``c_exp == 1`` (both always right, or both always wrong): :func:`error_consistency` returns None
there (model-vs-human's code returns 1.0 whenever ``c_obs == 1``; every other value agrees).

**Stored correctness**: :func:`pack_correct` turns a boolean vector (image ``i`` of the
evaluated images, in order) into ``{"n": N, "bits": base64(numpy.packbits(correct,
bitorder="little"))}``: N / 8 bytes, 1,668 base64 characters for 10,000 images.
:func:`unpack_correct` reverses it. A benchmark stores these under its ``correct`` metric (a
nested dict whose leaves are packed vectors, e.g. ``correct[corruption][severity]``); the report
computes the error consistency of every variant with its baseline from them.

numpy only (imported by torch-free plugin modules and by the report).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the keys of one packed vector
PACKED_KEYS = frozenset({"n", "bits"})


def pack_correct(correct: Sequence[bool] | np.ndarray) -> dict[str, Any]:
    """A boolean vector as ``{"n": len, "bits": base64 of numpy.packbits(..., "little")}``."""
    a = np.asarray(correct, dtype=bool).ravel()
    bits = np.packbits(a, bitorder="little").tobytes()
    return {"n": int(a.size), "bits": base64.b64encode(bits).decode("ascii")}


def unpack_correct(packed: dict[str, Any]) -> np.ndarray:
    """The boolean vector :func:`pack_correct` stored; ValueError for anything else."""
    if not is_packed(packed):
        raise ValueError("not a packed correctness vector ({'n': int, 'bits': base64 str})")
    n = packed["n"]
    try:
        raw = base64.b64decode(packed["bits"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"bits are not base64: {exc}") from None
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"{len(raw)} bytes of bits for n={n} (expected {(n + 7) // 8})")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n, bitorder="little").astype(
        bool
    )


def is_packed(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == PACKED_KEYS
        and isinstance(value["n"], int)
        and not isinstance(value["n"], bool)
        and value["n"] >= 0
        and isinstance(value["bits"], str)
    )


def packed_leaves(tree: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """``(path, packed)`` for every packed vector in a nested dict (``correct`` as stored)."""
    if is_packed(tree):
        yield prefix, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from packed_leaves(v, (*prefix, str(k)))


@dataclass(frozen=True)
class Consistency:
    """Geirhos et al. (2020): observed and expected consistency, kappa (None when undefined)."""

    n: int
    accuracy_a: float
    accuracy_b: float
    observed: float
    expected: float
    kappa: float | None


def consistency(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray) -> Consistency:
    """Trial-by-trial agreement of two correctness vectors over the same trials (Geirhos, Meding
    & Wichmann 2020, Eq. 1-3); ValueError if their lengths differ or they are empty."""
    a = np.asarray(a, dtype=bool).ravel()
    b = np.asarray(b, dtype=bool).ravel()
    if a.size != b.size:
        raise ValueError(f"{a.size} trials against {b.size}: error consistency needs the same")
    if a.size == 0:
        raise ValueError("no trials")
    p1, p2 = float(a.mean()), float(b.mean())
    c_obs = float((a == b).mean())
    c_exp = p1 * p2 + (1 - p1) * (1 - p2)
    kappa = (
        None
        if math.isclose(c_exp, 1.0, rel_tol=0, abs_tol=1e-12)
        else (c_obs - c_exp) / (1 - c_exp)
    )
    return Consistency(int(a.size), p1, p2, c_obs, c_exp, kappa)


def error_consistency(
    a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray
) -> float | None:
    """Cohen's kappa of two correctness vectors (Geirhos, Meding & Wichmann 2020, NeurIPS,
    Eq. 1-3): ``(c_obs - c_exp) / (1 - c_exp)``; None where ``c_exp == 1`` (undefined)."""
    return consistency(a, b).kappa


__all__ = [
    "Consistency",
    "consistency",
    "error_consistency",
    "is_packed",
    "pack_correct",
    "packed_leaves",
    "unpack_correct",
]
