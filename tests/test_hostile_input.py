"""Hostile and malformed input: every bad submission, file and option is one short line, exit 2.

One regression test per class found by feeding mutated submissions to `bioprior validate`,
plus the files a submission names, the `results` / `score` paths and provenance, and
a hypothesis fuzz test of `validate` on mutations of the shipped submissions (a bounded number of
examples by default, 1,500 with ``-m slow``).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sqlite3
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, tiny_submission
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bioprior.registry.cli.app import app
from bioprior.registry.submissions.loading import MAX_ERRORS, load_submission

QUICKSTART = (ROOT / "submissions" / "quickstart.yaml").read_text()
ADVERSARIAL = (ROOT / "submissions" / "digits-adversarial.yaml").read_text()


def cli(*args: str):
    result = CliRunner().invoke(app, list(args), catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    errors = [ln for ln in result.stderr.splitlines() if not ln.startswith("warning:")]
    return result.exit_code, result.stdout, errors


def one_error(path: Path | str, *more: str) -> str:
    """``validate`` exits 2 with exactly one short line; return it."""
    code, out, errors = cli("validate", str(path), *more)
    assert code == 2, (out, errors)
    assert len(errors) == 1, errors
    assert len(errors[0]) <= 300 and "Traceback" not in errors[0]
    return errors[0]


def write(tmp_path: Path, text: str | bytes, name: str = "sub.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# -- the YAML itself ---------------------------------------------------------------------------
def test_nesting_500_deep_is_one_line(tmp_path):
    path = write(tmp_path, QUICKSTART + "description: " + "[" * 500 + "]" * 500 + "\n")
    line = one_error(path)
    assert "nested deeper than" in line and line.startswith(f"{path}:")


@pytest.mark.parametrize(
    "data",
    [
        QUICKSTART.encode() + "# caf\xe9\n".encode("latin-1"),
        QUICKSTART.encode("utf-16"),
        bytes(range(256)) * 4,
    ],
    ids=["latin-1", "utf-16", "random"],
)
def test_bytes_that_are_not_utf8(tmp_path, data):
    assert "not UTF-8 text" in one_error(write(tmp_path, data))


def test_integer_of_4400_digits(tmp_path):
    path = write(tmp_path, QUICKSTART.replace("epochs: 50", "epochs: 1" + "0" * 4400))
    line = one_error(path)
    assert "integer too large" in line and ":26:" in line  # the epochs line


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_devices_are_refused_without_reading(device):
    if not Path(device).exists():
        pytest.skip(f"no {device}")
    assert "not a regular file" in one_error(device)


def test_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    assert "not a regular file" in one_error(fifo)
    assert time.perf_counter() - t0 < 10  # a hang would never return; this is not a benchmark


def test_directory_and_oversized_file(tmp_path):
    assert "a directory" in one_error(tmp_path)
    big = write(tmp_path, QUICKSTART.replace("name: small_alexnet", "name: " + "a" * 10**7))
    line = one_error(big)
    assert "file too large" in line and len(line) < 200


def test_a_document_of_many_values_is_refused_by_count(tmp_path):
    """Under the size limit but 120,000 values: refused while parsing (libyaml events), not
    after composing them all."""
    path = write(tmp_path, QUICKSTART + "authors: [" + ",".join(["1"] * 120_000) + "]\n")
    assert "more than 20,000 values" in one_error(path)


def test_duplicate_keys_name_the_second_line(tmp_path):
    path = write(tmp_path, "seeds: [7]\n" + QUICKSTART)
    line = one_error(path)
    assert "duplicate key 'seeds' (first on line 1)" in line
    assert line.startswith(
        f"{path}:{QUICKSTART.count(chr(10), 0, QUICKSTART.index('seeds:')) + 2}:"
    )


def test_alias_bomb_in_free_form_params_is_refused_in_bounded_memory(tmp_path):
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = ADVERSARIAL.replace(
        "surrogate_params: {width: 0.5}",
        "surrogate_params:\n        " + "\n        ".join(bomb),
    )
    path = write(tmp_path, text)
    tracemalloc.start()
    try:
        line = one_error(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "once aliases are expanded" in line
    assert peak < 50 * 2**20


def test_small_aliases_still_work():
    from bioprior.registry.base.safe_yaml import load

    data, _ = load("base: &b {width: 0.5}\nmodel: {name: m, params: *b}\nmerged: {<<: *b, x: 1}\n")
    assert data["model"]["params"] == {"width": 0.5} and data["merged"] == {"width": 0.5, "x": 1}


@pytest.mark.parametrize(
    "value", ["!!binary aGVsbG8=", "!!python/object/apply:os.system [ls]", "!custom x"]
)
def test_tags_are_refused(tmp_path, value):
    path = write(tmp_path, QUICKSTART.replace("name: quickstart", f"name: {value}", 1))
    assert "not allowed (only plain values)" in one_error(path)


# -- values --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [2**63, 2**32, -1])
def test_seeds_are_bounded_before_anything_trains(tmp_path, seed):
    line = one_error(write(tmp_path, QUICKSTART.replace("seeds: [0]", f"seeds: [{seed}]")))
    assert "seeds" in line or "64 bits" in line


def test_seed_at_the_top_of_its_range_is_valid(tmp_path, registry):
    path = write(tmp_path, QUICKSTART.replace("seeds: [0]", f"seeds: [{2**32 - 1}]"))
    assert load_submission(path, registry).submission.seeds == [2**32 - 1]


def test_long_names_are_bounded_and_never_echoed_whole(tmp_path):
    name = "x" * 100_000
    line = one_error(write(tmp_path, QUICKSTART.replace("name: small_alexnet", f"name: {name}")))
    assert "model.name" in line and len(line) <= 300
    line = one_error(write(tmp_path, QUICKSTART.replace("name: quickstart", f"name: q{name}", 1)))
    assert line.split(": ")[1] == "name" and len(line) <= 300


def test_sweep_of_a_million_points_is_refused_before_expanding(tmp_path, monkeypatch):
    axis = "[" + ", ".join(f"0.{i:03d}" for i in range(100)) + "]"
    text = QUICKSTART.replace(
        "  constraints.0.params.sigma: [0.0, 0.6]",
        f"  constraints.0.params.sigma: {axis}\n  training.lr: {axis}\n  training.momentum: {axis}",
    )
    line = one_error(write(tmp_path, text))
    assert "1,000,000 points" in line and "BIOPRIOR_MAX_SWEEP_POINTS" in line
    small = QUICKSTART.replace(
        "  constraints.0.params.sigma: [0.0, 0.6]",
        "  constraints.0.params.sigma: [0.0, 0.6]\n  training.lr: [0.01, 0.02, 0.03]",
    )
    monkeypatch.setenv("BIOPRIOR_MAX_SWEEP_POINTS", "5")
    assert "6 points" in one_error(write(tmp_path, small))
    monkeypatch.setenv("BIOPRIOR_MAX_SWEEP_POINTS", "6")
    code, out, _ = cli("validate", str(tmp_path / "sub.yaml"))
    assert code == 0 and "6 variants" in out


def test_errors_are_deduplicated_and_capped(tmp_path):
    bad = ", ".join(str(-i) for i in range(1, 60))
    text = QUICKSTART.replace(
        "  constraints.0.params.sigma: [0.0, 0.6]",
        f"  constraints.0.params.sigma: [0.0, 0.6]\n  training.epochs: [{bad}]",
    )
    code, _, errors = cli("validate", str(write(tmp_path, text)))
    assert code == 2 and len(errors) == MAX_ERRORS
    # the same message at both sigma values is one line: 59 distinct errors, 19 shown
    assert errors[-1].endswith(f": ... and {59 - MAX_ERRORS + 1} more errors")
    same = QUICKSTART.replace(
        "  constraints.0.params.sigma: [0.0, 0.6]",
        "  constraints.0.params.sigma: [-1.0]\n  training.lr: [0.01, 0.02, 0.03]",
    )
    code, _, errors = cli("validate", str(write(tmp_path, same)))
    assert code == 2 and len(errors) == 1 and errors[0].endswith("(and 2 more sweep points)")


def test_unknown_attack_and_bad_attack_params_fail_validate(tmp_path):
    text = ADVERSARIAL.replace(
        "- {name: pgd_linf_search}", "- {name: no_such_attack_zz, params: {steps: -5}}"
    )
    line = one_error(write(tmp_path, text))
    assert "minimal_attacks.0.name: unknown attack 'no_such_attack_zz'" in line
    text = ADVERSARIAL.replace("- {name: pgd_linf_search}", "- {name: ddn, params: {steps: -5}}")
    assert "minimal_attacks.0.params.steps" in one_error(write(tmp_path, text))
    text = ADVERSARIAL.replace(
        "images: 100", "images: 100\n      transfer_attack: {name: pgd_linfx}"
    )
    assert "transfer_attack.name: unknown attack" in one_error(write(tmp_path, text))


@pytest.mark.parametrize(
    "replace",
    [
        ("surrogate_params: {width: 0.5}", "surrogate_params: {width: .nan}"),
        ("surrogate_params: {width: 0.5}", "surrogate_params: {width: -.inf}"),
        ("images: 100", "images: 100\n      score_epsilon: .inf"),
        (
            "images: 100",
            (
                "images: 100\n      curves: {pgd_linf: {attack: {name: pgd_linf}, "
                "epsilons: [0.0, .nan]}}"
            ),
        ),
    ],
    ids=["nan-surrogate", "inf-surrogate", "inf-epsilon", "nan-epsilons"],
)
def test_non_finite_numbers_are_refused(tmp_path, replace):
    assert "must be a finite number" in one_error(write(tmp_path, ADVERSARIAL.replace(*replace)))


def test_surrogate_model_and_params_are_resolved(tmp_path):
    text = ADVERSARIAL.replace("surrogate_params: {width: 0.5}", "surrogate_params: {width: -1}")
    assert "surrogate_params.width" in one_error(write(tmp_path, text))
    text = ADVERSARIAL.replace("surrogate_params: {width: 0.5}", "surrogate_model: no_such_net")
    assert "surrogate_model: unknown model 'no_such_net'" in one_error(write(tmp_path, text))


def test_corruption_baseline_plugins_are_resolved(tmp_path, write_submission):
    sub = tiny_submission(
        benchmarks=[
            {
                "name": "corruption",
                "params": {"baseline": {"constraints": [{"name": "no_such_constraint"}]}},
            }
        ]
    )
    line = one_error(write_submission(sub))
    assert "baseline.constraints.0.name: unknown constraint 'no_such_constraint'" in line


def test_neural_data_reference_is_resolved_through_the_registry(tmp_path, write_submission):
    sub = tiny_submission(
        constraints=[
            {"name": "neural_similarity", "params": {"data": {"name": "synthetic_v1",
                                                               "params": {"num_stimuli": 1}}}}
        ]
    )  # fmt: skip
    assert "num_stimuli" in one_error(write_submission(sub))


# -- files named by a submission -------------------------------------------------------------
def _timm_submission(weights: Path) -> dict:
    return tiny_submission(
        model={"name": "timm:resnet18", "params": {"pretrained_file": str(weights)}}
    )


@pytest.mark.parametrize("kind", ["pickle", "torch-zip", "truncated"])
def test_pretrained_file_is_checked_by_content_at_validate(tmp_path, write_submission, kind):
    import torch
    from safetensors.torch import save_file

    weights = tmp_path / "w.safetensors"
    if kind == "pickle":
        weights.write_bytes(pickle.dumps({"conv1.weight": [1.0, 2.0]}))
    elif kind == "torch-zip":
        torch.save({"conv1.weight": torch.zeros(2)}, weights)
    else:
        save_file({"conv1.weight": torch.zeros(64, 3, 7, 7)}, str(weights))
        weights.write_bytes(weights.read_bytes()[:-100])
    line = one_error(write_submission(_timm_submission(weights)))
    assert "model.params.pretrained_file" in line
    assert ("not a safetensors file" in line) or ("truncated" in line)


def test_npy_renamed_npz_is_one_line_naming_the_field(tmp_path, write_submission):
    np.save(tmp_path / "data.npy", np.zeros((4, 8, 8), np.float32))
    (tmp_path / "data.npz").write_bytes((tmp_path / "data.npy").read_bytes())
    sub = tiny_submission(
        constraints=[
            {
                "name": "neural_similarity",
                "params": {"data": {"name": "neural_file", "params": {"path": str(tmp_path / "data.npz")}}},
            }
        ]
    )  # fmt: skip
    line = one_error(write_submission(sub))
    assert "constraints.0.params.data.params.path" in line and "a .npy array" in line


def _lying_npz(path: Path, shape=(10**11,)) -> Path:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("stimuli.npy", header.getvalue() + b"\0" * 16)
        z.writestr("responses.npy", header.getvalue() + b"\0" * 16)
    return path


def test_npz_header_claiming_373_gib_is_refused_without_allocating(tmp_path):
    from bioprior.plugins.neural_data import NeuralFileParams
    from bioprior.plugins.neural_data.files import load_neural_file
    from bioprior.registry.submissions.files import FileCheckError, check_npz

    path = _lying_npz(tmp_path / "lie.npz")
    tracemalloc.start()
    try:
        with pytest.raises(FileCheckError, match=r"372\.5 GiB.*16 bytes"):
            check_npz(path)
        with pytest.raises(ValueError, match="header claims"):  # the plugin calls the same check
            load_neural_file(NeuralFileParams(path=str(path)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


def test_real_files_pass_their_checks(tmp_path):
    import torch
    from safetensors.torch import save_file

    from bioprior.registry.submissions.files import check_image_folder, check_npz, check_safetensors

    save_file({"a": torch.zeros(3, 4), "b": torch.ones(5, dtype=torch.bfloat16)}, tmp_path / "w")
    assert check_safetensors(tmp_path / "w")["a"]["shape"] == [3, 4]
    np.savez_compressed(tmp_path / "d.npz", stimuli=np.zeros((4, 8, 8), np.uint8), r=np.ones(3))
    assert check_npz(tmp_path / "d.npz") == {"stimuli": ((4, 8, 8), "|u1"), "r": ((3,), "<f8")}
    from PIL import Image

    (tmp_path / "set" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "set" / "cat" / "a.png")
    assert check_image_folder(tmp_path / "set") == {"cat": 1}


def test_object_arrays_in_npz_are_refused(tmp_path):
    from bioprior.registry.submissions.files import FileCheckError, check_npz

    np.savez(tmp_path / "o.npz", stimuli=np.array([{"x": 1}], dtype=object))
    with pytest.raises(FileCheckError, match="object arrays"):
        check_npz(tmp_path / "o.npz")


def test_image_folder_with_a_non_image_fails_validate(tmp_path, write_submission):
    (tmp_path / "set" / "cat").mkdir(parents=True)
    (tmp_path / "set" / "cat" / "a.png").write_bytes(pickle.dumps("not an image"))
    sub = tiny_submission(
        benchmarks=[{"name": "ood_stylized", "params": {"external": [{"name": "x", "path": str(tmp_path / "set")}]}}]
    )  # fmt: skip
    line = one_error(write_submission(sub))
    assert "benchmarks.0.params.external.0.path" in line and "not a readable image" in line


# -- results and score paths ---------------------------------------------------------------------
def test_results_bad_paths_are_one_line(tmp_path, bioprior_home):
    (tmp_path / "some.yaml").write_text(QUICKSTART)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE x (a)")
    for db, expected in [
        (tmp_path, "is a directory"),
        (tmp_path / "some.yaml", "not an SQLite database"),
        (other, "no results table"),
        (tmp_path / "missing.sqlite", "no results database"),
    ]:
        code, _, errors = cli("results", "--db", str(db))
        assert code == 2 and len(errors) == 1 and expected in errors[0], errors
    assert not bioprior_home.exists()  # read-only: nothing created


def test_results_on_an_unusable_home(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("BIOPRIOR_HOME", str(tmp_path / "file" / "home"))
    code, _, errors = cli("results")
    assert code == 2 and len(errors) == 1 and errors[0].startswith("error: --db:")


def test_score_with_an_unwritable_home_stops_before_training(
    tmp_path, monkeypatch, write_submission
):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("BIOPRIOR_HOME", str(tmp_path / "file" / "home"))
    db = tmp_path / "results.sqlite"
    code, _out, lines = cli("score", str(write_submission(tiny_submission())), "--db", str(db))
    errors = [ln for ln in lines if ln.startswith("error:")]  # after the plan line
    assert code == 2 and len(errors) == 1, lines
    assert "cannot write" in errors[0] and "nothing was run" in errors[0]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_results_on_a_read_only_database(tmp_path, monkeypatch, write_submission):
    from bioprior.registry.store.results import ResultStore

    ResultStore(tmp_path / "db" / "r.sqlite").close()
    os.chmod(tmp_path / "db", 0o555)
    try:
        code, _out, errors = cli("results", "--db", str(tmp_path / "db" / "r.sqlite"))
        assert code == 0, errors
    finally:
        os.chmod(tmp_path / "db", 0o755)


# -- provenance -----------------------------------------------------------------------------------
def test_rows_carry_provenance_and_json_shows_it(tmp_path, write_submission, one_thread):
    db = tmp_path / "r.sqlite"
    code, _, errors = cli("score", str(write_submission(tiny_submission())), "--db", str(db))
    assert code == 0, errors
    code, out, _ = cli("results", "--db", str(db), "--format", "json")
    (row,) = json.loads(out)
    for key in ("training_key", "weights", "benchmark_params", "bioprior_version"):
        assert row[key], key
    assert row["training_key"] in row["weights"]
    prov = row["provenance"]
    import torch
    import torchvision

    assert prov["torch"] == torch.__version__ and prov["torchvision"] == torchvision.__version__
    assert prov["numpy"] == np.__version__ and prov["foolbox"] and prov["python"]
    assert prov["torch_num_threads"] == 1
    # the host's CPU changes fp32 numbers (oneDNN picks kernels by its instruction set)
    assert prov["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert prov["cpu"] and prov["cpu"] != "cpu"
    assert "spec" not in row
    (full,) = json.loads(cli("results", "--db", str(db), "--format", "json", "--spec")[1])
    assert full["spec"]["benchmark"]["name"] == "memorization"


def test_git_commit_when_run_from_a_checkout():
    from bioprior.registry.base.provenance import git_commit

    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    info = git_commit()
    assert info is not None and len(info["commit"]) == 40


def test_provenance_on_cuda_names_the_gpu():
    from bioprior.registry.base.provenance import capture

    assert "gpu" not in capture("cpu")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    info = capture("cuda:0")
    assert info["gpu"] and info["cuda"] and info["cudnn"]


def test_old_databases_gain_the_provenance_column(tmp_path):
    from bioprior.registry.store.results import SCHEMA, ResultStore

    old = SCHEMA.replace("    provenance TEXT,\n", "")
    assert "provenance" not in old
    with sqlite3.connect(tmp_path / "old.sqlite") as conn:
        conn.executescript(old)
    ResultStore(tmp_path / "old.sqlite").close()
    with sqlite3.connect(tmp_path / "old.sqlite") as conn:
        cols = {r[1] for r in conn.execute("PRAGMA table_info(results)")}
    assert "provenance" in cols


# -- fuzz: mutations of the shipped submissions ---------------------------------------------------
FUZZ_SOURCES = [
    (ROOT / "submissions" / name).read_text()
    for name in ("quickstart.yaml", "digits-adversarial.yaml", "digits-robustness.yaml")
]
#: values that are invalid wherever they land (each is refused by the loader or the schema)
ALWAYS_INVALID = [
    "1" + "0" * 4400,
    str(2**63),
    "[" * 300 + "]" * 300,
    "!!binary aGVsbG8=",
    "!!python/object/apply:os.system [echo]",
    ".nan",
    "-.inf",
]
#: lines that are invalid wherever they are inserted at the top level
ALWAYS_INVALID_LINES = [
    "seeds: [7]",
    "name: dup",
    "bomb: &a [x, x, x, x, x, x, x, x, x, x]",
    "description: " + "[" * 200 + "]" * 200,
]
HOSTILE = ALWAYS_INVALID + [
    "x" * 5000,
    "'" + "y" * 3000 + "'",
    "-5",
    "0",
    "1e308",
    "[]",
    "{}",
    "null",
    "no_such_plugin_zz",
    "{name: no_such_attack_zz, params: {steps: -5}}",
    "&anchor [1, 2]",
    "*undefined_alias",
    "[1, [2, [3, [4]]]]",
    "{a: {b: {c: {d: 1}}}}",
    '"\\u0000"',
    "'\t'",
    "2024-01-01",
    "0x7fffffffffffffff",
    "1:20:30",
]


def _value_lines(lines: list[str]) -> list[int]:
    """Lines ``key: value`` outside comments and block scalars (``description: >`` text)."""
    out, block_indent = [], None
    for i, ln in enumerate(lines):
        indent = len(ln) - len(ln.lstrip())
        if block_indent is not None and (not ln.strip() or indent > block_indent):
            continue
        block_indent = None
        if ": " in ln and not ln.lstrip().startswith("#"):
            out.append(i)
        if ln.rstrip().endswith((": >", ": |", ": >-", ": |-")):
            block_indent = indent
    return out


@st.composite
def mutated_documents(draw) -> tuple[bytes, bool]:
    """``(document, must_fail)``: one shipped submission with one mutation."""
    text = draw(st.sampled_from(FUZZ_SOURCES))
    lines = text.splitlines()
    kind = draw(st.sampled_from(["value", "value", "line", "bytes", "truncate", "alias-bomb"]))
    if kind == "value":
        candidates = _value_lines(lines)
        i = draw(st.sampled_from(candidates))
        value = draw(
            st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40), st.integers().map(str))
        )
        key = lines[i].split(": ", 1)[0]
        lines[i] = f"{key}: {value}"
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        continued = len(nxt) - len(nxt.lstrip()) > len(lines[i]) - len(lines[i].lstrip())
        invalid = value in ALWAYS_INVALID and not continued  # else text may fold into it
        return "\n".join(lines).encode("utf-8", "surrogatepass"), invalid
    if kind == "line":
        line = draw(st.sampled_from(ALWAYS_INVALID_LINES))
        at = draw(st.integers(0, len(lines)))
        while at < len(lines) and lines[at][:1] in {" ", "-", "\t"}:  # a top-level position
            at += 1
        return "\n".join([*lines[:at], line, *lines[at:]]).encode(), True
    if kind == "alias-bomb":
        bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
        return (text + "\n" + "\n".join(bomb) + "\n").encode(), True
    data = text.encode()
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data)))], False
    at = draw(st.integers(0, len(data)))
    junk = draw(st.binary(min_size=1, max_size=64))
    return data[:at] + junk + data[at:], False


def _fuzz_validate(tmp_path_factory, doc: bytes, must_fail: bool) -> None:
    folder = tmp_path_factory.mktemp("doc")
    path = folder / "fuzz.yaml"
    path.write_bytes(doc.decode("utf-8", "surrogateescape").encode("utf-8", "surrogateescape"))
    code, out, errors = cli("validate", str(path))
    assert code in (0, 2), (code, out, errors)
    if must_fail:
        assert code == 2, doc[:200]
    if code == 2:
        assert 1 <= len(errors) <= MAX_ERRORS, errors
        for line in errors:
            assert len(line) <= 300 and "Traceback" not in line, line
    else:
        assert out.strip().endswith("jobs)") and not errors, (out, errors)
    assert sorted(p.name for p in folder.iterdir()) == ["fuzz.yaml"]  # nothing written


def _fuzz(tmp_path_factory, bioprior_home, examples: int, deadline) -> None:
    import resource

    cli("validate", str(ROOT / "submissions" / "quickstart.yaml"))  # load the plugins once
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    @settings(
        max_examples=examples,
        deadline=deadline,
        derandomize=examples < 1000,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(mutated_documents())
    def run(case):
        _fuzz_validate(tmp_path_factory, *case)

    run()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss  # KiB on Linux
    assert grown < 300 * 1024, f"validate grew the process by {grown / 1024:.0f} MiB"
    assert not bioprior_home.exists()  # validate never creates the home


def test_fuzz_validate_bounded(tmp_path_factory, bioprior_home):
    _fuzz(tmp_path_factory, bioprior_home, examples=60, deadline=None)


@pytest.mark.slow
def test_fuzz_validate_1500(tmp_path_factory, bioprior_home):
    """>= 1,000 mutated documents, each within 1 s (hypothesis' deadline)."""
    from datetime import timedelta

    _fuzz(tmp_path_factory, bioprior_home, examples=1500, deadline=timedelta(seconds=1))
