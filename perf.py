"""``python -m bioprior.perf [PATH ...]``: the ratio of each performance pair of tests/perf.

Reads pytest-benchmark JSON (``--benchmark-autosave`` writes ``.benchmarks/<machine>/NNNN_*.json``;
a PATH is such a file or a folder, whose newest one is read; default: the newest under
``.benchmarks``) and prints, per pair (``extra_info["pair"]``), the reference's mean time over the
engine's (``> 1``: the engine is faster); where the engine's test also timed the reference between
its rounds, the same ratio from those times (``interleaved``: both sides in the same minutes of a
machine whose speed drifts); images/s, the device and, where the pair counts its FLOPs, the
fraction of the device's matmul rate (bf16 on a GPU; on a CPU the precision each side trained in)
that the engine and the reference reach, and the pair's ceiling: the ratio the engine would reach
at that rate (the reference's time over the pair's FLOPs at the device's peak). A target above
the ceiling cannot be met on that device in that precision.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROG = "python -m bioprior.perf"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints the usage too)
        self.exit(2, f"{PROG}: {message} (see --help)\n")


class ReportError(Exception):
    """A PATH that is not pytest-benchmark JSON: one line, exit 2."""


def newest(root: Path = Path(".benchmarks")) -> Path:
    files = sorted(root.glob("**/*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise ReportError(f"{root}: no pytest-benchmark JSON here (run with --benchmark-autosave)")
    return files[-1]


def pairs(data: dict) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "pair" in info and "role" in info:
            out.setdefault(info["pair"], {})[info["role"]] = bench
    return out


def load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ReportError(f"{path}: benchmarks: missing; not a pytest-benchmark JSON file")
    return data


def report(path: Path) -> list[str]:
    if path.is_dir():
        path = newest(path)
    data = load(path)
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
        interleaved = _interleaved(info, e)
        if ref is not None:
            ratio = ref["stats"]["mean"] / e
            measured = _measured_peak(info)
            if measured is not None and measured[1] > 0:
                extra += f"; ceiling {ratio / measured[1]:.1f}x"
            lines.append(
                f"  {pair:<32} {ratio:5.2f}x{interleaved}  engine {e:.4f} s, {rate}{extra}"
            )
        else:
            lines.append(f"  {pair:<32}    --  {interleaved}  engine {e:.4f} s, {rate}{extra}")
        lines[-1] += f"  [{info.get('device', '')}]"
    return lines


def _interleaved(info: dict, engine_mean: float) -> str:
    """ " (interleaved R.RRx)": the reference's mean time over the engine's where the engine's
    test also timed the reference between its rounds (``perfkit.interleave``); blank elsewhere."""
    times = info.get("interleaved_reference_s")
    if not times or engine_mean <= 0:
        return ""
    return f" (interleaved {sum(times) / len(times) / engine_mean:.2f}x)"


def _measured_peak(info: dict) -> tuple[str, float] | None:
    """``(precision, fraction)`` of the device's matmul rate a side reached, where measured."""
    for precision in ("bf16", "fp32"):
        fraction = info.get(f"{precision}_peak_fraction")
        if fraction is not None:
            return precision, float(fraction)
    return None


def _peak(info: dict) -> str:
    """ ", X% of bf16 matmul peak" (GPU) or ", X% of fp32 matmul peak" (CPU), where measured."""
    measured = _measured_peak(info)
    return f", {measured[1]:.1%} of {measured[0]} matmul peak" if measured is not None else ""


def main(argv: list[str] | None = None) -> int:
    about = __doc__.split("\n\n", 1)[1].replace("``", "'")
    parser = _Parser(prog=PROG, description=about)
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="pytest-benchmark JSON files or folders (default: the newest under .benchmarks)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        for path in args.paths or [newest()]:
            print("\n".join(report(path)))
    except ReportError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
