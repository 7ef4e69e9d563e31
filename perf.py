"""``python -m bioprior.perf [FILE.json ...]``: the ratio of each performance pair of tests/perf.

Reads pytest-benchmark JSON (``--benchmark-autosave`` writes ``.benchmarks/<machine>/NNNN_*.json``;
default: the newest one under ``.benchmarks``) and prints, per pair (``extra_info["pair"]``), the
reference's mean time over the engine's (``> 1``: the engine is faster), with images/s, the device
and, where the pair counts its FLOPs, the fraction of the device's matmul rate (bf16 on a GPU,
fp32 on a CPU) that the engine and the reference reach.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def newest(root: Path = Path(".benchmarks")) -> Path:
    files = sorted(root.glob("**/*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise SystemExit(f"no pytest-benchmark JSON under {root}/ (run with --benchmark-autosave)")
    return files[-1]


def pairs(data: dict) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "pair" in info and "role" in info:
            out.setdefault(info["pair"], {})[info["role"]] = bench
    return out


def report(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    lines = [f"{path}  ({data.get('datetime', '')})"]
    for pair, roles in sorted(pairs(data).items()):
        engine, ref = roles.get("engine"), roles.get("reference")
        if engine is None:
            continue
        e = engine["stats"]["mean"]
        info = engine["extra_info"]
        rate = f"{info['images_per_s']:,.0f} images/s" if "images_per_s" in info else ""
        extra = _peak(info)
        ref_peak = _peak(ref["extra_info"]) if ref is not None else ""
        if ref_peak:
            extra += f" (reference{ref_peak[1:]})"
        if ref is not None:
            ratio = ref["stats"]["mean"] / e
            lines.append(f"  {pair:<32} {ratio:5.2f}x  engine {e:.4f} s, {rate}{extra}")
        else:
            lines.append(f"  {pair:<32}    --   engine {e:.4f} s, {rate}{extra}")
        lines[-1] += f"  [{info.get('device', '')}]"
    return lines


def _peak(info: dict) -> str:
    """ ", X% of bf16 matmul peak" (GPU) or ", X% of fp32 matmul peak" (CPU), where measured."""
    for precision in ("bf16", "fp32"):
        fraction = info.get(f"{precision}_peak_fraction")
        if fraction is not None:
            return f", {fraction:.1%} of {precision} matmul peak"
    return ""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for path in [Path(a) for a in args] or [newest()]:
        print("\n".join(report(path)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
