"""Does a plugin's entry-point module import without torch, and does listing stay light?

Checked in fresh interpreters: one subprocess imports every module in turn and, after each,
records which heavy modules appeared; the first module that pulls one in ends that process
(the rest are probed again in a new one), so a well-behaved distribution costs one subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

HEAVY = ("torch", "torchvision", "timm", "sklearn", "foolbox")

_PROBE = r"""
import json, sys, time
HEAVY = %(heavy)r
def heavy():
    return sorted(m for m in HEAVY if m in sys.modules)
from bioprior.plugin import Registry
for name in %(modules)r:
    out = {"module": name, "error": None, "import_heavy": [], "listing_heavy": []}
    t0 = time.perf_counter()
    try:
        module = __import__(name, fromlist=["_"])
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(out), flush=True)
        continue
    out["import_s"] = time.perf_counter() - t0
    out["import_heavy"] = heavy()
    if not out["import_heavy"]:
        reg = Registry(strict=False, prefer={})
        reg.add_plugin(module, provider="probe")
        for entry in reg.list():
            json.dumps(entry.summary())
            json.dumps(entry.params.model_json_schema())
        out["listing_heavy"] = heavy()
    print(json.dumps(out), flush=True)
    if out["import_heavy"] or out["listing_heavy"]:
        break
"""


@dataclass(frozen=True)
class Probe:
    module: str
    error: str | None
    import_heavy: tuple[str, ...]
    listing_heavy: tuple[str, ...]
    import_s: float = 0.0


_RESULTS: dict[str, Probe] = {}


def probe(*modules: str) -> dict[str, Probe]:
    """Probe ``modules`` (results cached per process)."""
    todo = [m for m in dict.fromkeys(modules) if m not in _RESULTS]
    while todo:
        code = _PROBE % {"heavy": HEAVY, "modules": todo}
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
        )
        seen = []
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                _RESULTS[row["module"]] = Probe(
                    row["module"],
                    row["error"],
                    tuple(row["import_heavy"]),
                    tuple(row["listing_heavy"]),
                    row.get("import_s", 0.0),
                )
                seen.append(row["module"])
        if not seen:  # the interpreter itself failed
            tail = " ".join(done.stderr.strip().splitlines()[-1:]) or f"exit {done.returncode}"
            for m in todo:
                _RESULTS[m] = Probe(m, f"probe failed: {tail}", (), ())
            break
        todo = [m for m in todo if m not in _RESULTS]
    return {m: _RESULTS[m] for m in modules}
