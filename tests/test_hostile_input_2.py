"""Hostile input, round two: text that is markup elsewhere, weights that lie, plugins that
misbehave while imported, results databases that are not what they should be, a full disk.

Every case uses a real file: a results store written row by row with hostile names, plugin
packages on ``sys.path`` that raise, exit or hang at import, weights files that were tampered
with or are FIFOs, and databases broken in each way a user may meet. ``bioprior`` answers each
with one line naming the file and what is wrong (exit 2), or shows the text literally (exit 0).
"""

from __future__ import annotations

import json
import os
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bioprior.registry.cli.app import app
from bioprior.registry.store.results import ResultStore


def cli(*args: str):
    result = CliRunner().invoke(app, list(args), catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    errors = [ln for ln in result.stderr.splitlines() if not ln.startswith("warning:")]
    return result.exit_code, result.stdout, errors


def one_line(*args: str) -> str:
    """The command exits 2 with exactly one short line on stderr; return it."""
    code, out, errors = cli(*args)
    assert code == 2, (code, out, errors)
    assert len(errors) == 1, errors
    assert len(errors[0]) <= 400 and "Traceback" not in errors[0]
    return errors[0]


# -- a store written row by row ---------------------------------------------------------------
def _row(submission: str, variant: dict, seed: int = 0, **over) -> dict:
    key = f"{submission}|{json.dumps(variant, sort_keys=True)}|{seed}|{over.get('benchmark')}"
    row = {
        "job_key": str(abs(hash(key))),
        "submission": submission,
        "variant": json.dumps(variant, sort_keys=True),
        "seed": seed,
        "benchmark": "memorization",
        "benchmark_version": "1",
        "benchmark_params": "{}",
        "training_key": "t" + str(abs(hash(key)) % 10**8),
        "metrics": json.dumps({"natural_test_acc": 0.5 + 0.1 * seed, "random_train_acc": 0.2}),
        "score": 0.5,
        "status": "ok",
        "error": None,
        "error_class": None,
        "plugin_versions": "{}",
        "spec": "{}",
        "weights": "null",
    }
    row.update(over)
    return row


def write_store(path: Path, rows: list[dict]) -> Path:
    ResultStore(path).close()
    conn = sqlite3.connect(path)
    with conn:
        for row in rows:
            cols = ", ".join(row)
            conn.execute(
                f"INSERT INTO results ({cols}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
    conn.close()
    return path


MARKUP = "[/x] [bold]b[/bold] [link=file:///etc/passwd]l[/link] \\[y]"
MATH = "$\\foo$ and $x^$"
CONTROL = "bell\x07 nul\x00 esc\x1b[31m end"
SWEEP = "constraints.0.params.sigma"
TAG = "constraints.0.params.tag"


def hostile_rows() -> list[dict]:
    rows = []
    for name in (MARKUP, "__proto__", "toString", "constructor", "n" * 5000, "N" * 5000):
        for sigma in (0.0, 0.3):
            for seed in (0, 1):
                rows.append(_row(name, {SWEEP: sigma, TAG: MATH}, seed))
    for sigma in (0.0, 0.3):
        rows.append(_row(CONTROL, {SWEEP: sigma, TAG: CONTROL}))
        rows.append(_row(f"math {MATH}", {SWEEP: sigma, TAG: MATH}))
    rows.append(
        _row(
            MARKUP,
            {SWEEP: 0.6, TAG: MARKUP},
            status="failed",
            score=None,
            metrics="{}",
            error=f"RuntimeError: {MARKUP} {MATH}",
            error_class="plugin_error",
        )
    )
    return rows


@pytest.fixture
def hostile_store(tmp_path) -> Path:
    return write_store(tmp_path / "hostile.sqlite", hostile_rows())


# -- 1. text is text ----------------------------------------------------------------------------
def test_results_shows_markup_literally(tmp_path):
    rows = [r for r in hostile_rows() if r["submission"] in (MARKUP, "toString")]
    code, out, errors = cli("results", "--db", str(write_store(tmp_path / "r.sqlite", rows)))
    assert code == 0, errors
    for piece in ("[/x]", "[bold]b[/bold]", "\\[y]", "RuntimeError: [/x]"):
        assert piece in out  # literally: not interpreted, not escaped


def test_report_of_hostile_names(hostile_store, tmp_path):
    out = tmp_path / "site"
    code, _, errors = cli("report", "--db", str(hostile_store), "-o", str(out))
    assert code == 0, errors
    svgs = list(out.rglob("*.svg"))
    assert len(svgs) >= 8
    for svg in svgs:
        ET.parse(svg)  # well-formed, whatever the names held
        assert len(svg.name.encode()) < 255 and len(svg.parent.name.encode()) < 255
    text = "\n".join(svg.read_text() for svg in svgs)
    assert "$\\foo$" in text  # the dollars are text, not mathtext
    pages = sorted(p.name for p in (out / "submissions").iterdir())
    assert len(pages) == len({p.lower() for p in pages}) == 8  # 5,000 n's and N's: two pages
    assert all(len(p) < 100 for p in pages)


def test_compare_data_keeps_prototype_names_as_own_keys(hostile_store, tmp_path):
    """``__proto__`` in an object literal would set the prototype; the data is JSON.parse'd."""
    import shutil
    import subprocess

    if shutil.which("node") is None:
        pytest.skip("no node to evaluate the page's data with")
    out = tmp_path / "site"
    assert cli("report", "--db", str(hostile_store), "-o", str(out))[0] == 0
    script = (
        "const window = {};\n"
        + (out / "static" / "data.js").read_text()
        + "\nconst s = window.BIOPRIOR.submissions;"
        "\nconst own = (o, k) => Object.prototype.hasOwnProperty.call(o, k);"
        "\nconsole.log(JSON.stringify([own(s, '__proto__'), own(s, 'toString'),"
        " own(s, 'constructor'), own(s, 'valueOf'), Object.getPrototypeOf(s) === Object.prototype]));"
    )
    found = subprocess.run(
        ["node", "-e", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert json.loads(found.stdout) == [True, True, True, False, True], found.stderr
    js = (out / "static" / "report.js").read_text()
    assert "data.submissions[" not in js and "v.cells[" not in js


# -- 2. weights that lie -----------------------------------------------------------------------
@pytest.fixture
def faulty(tmp_path, monkeypatch):
    """The test plugin package (a linear model, a counting benchmark) on the path."""
    from faulty_plugins import activate, install

    from bioprior.registry.hooks.loading import set_registry

    activate(install(tmp_path / "plugins"), monkeypatch)
    set_registry(None)
    yield
    set_registry(None)


def _score_counted(tmp_path, write_submission, db: Path, sleep_s: float):
    from faulty_plugins import faulty_submission

    sub = faulty_submission("lie", benchmarks=[{"name": "counted", "params": {"sleep_s": sleep_s}}])
    code, out, errors = cli("score", str(write_submission(sub)), "--db", str(db), "--device", "cpu")
    assert code == 0, (out, errors)
    return out, errors


def _weights(bioprior_home: Path) -> Path:
    (found,) = (bioprior_home / "weights").glob("*.safetensors")
    return found


def _tamper(path: Path, rehash: bool) -> None:
    """Change one tensor; write the file's own hash for the new tensors (``rehash``) or none."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from bioprior.registry.base.atomic import TENSORS_HASH_KEY, tensors_hash

    with safe_open(str(path), "pt") as fh:
        metadata = dict(fh.metadata())
    state = load_file(str(path))
    name = max(state)
    state[name] = state[name] + 1.0
    metadata.pop(TENSORS_HASH_KEY)
    if rehash:
        metadata[TENSORS_HASH_KEY] = tensors_hash(state)
    save_file(state, str(path), metadata=metadata)


@pytest.mark.parametrize("how", ["rehashed", "hash removed", "fifo", "directory"])
def test_cached_weights_that_lie_are_set_aside_and_retrained(
    tmp_path, write_submission, bioprior_home, faulty, one_thread, how
):
    db = tmp_path / "results.sqlite"
    _score_counted(tmp_path, write_submission, db, 0.0)
    path = _weights(bioprior_home)
    with ResultStore.open_readonly(db) as store:
        (first,) = store.rows()
    if how in ("rehashed", "hash removed"):
        _tamper(path, rehash=how == "rehashed")
    else:
        path.unlink()
        os.mkfifo(path) if how == "fifo" else path.mkdir()
    out, errors = _score_counted(tmp_path, write_submission, db, 0.001)  # a new job, same training
    notice = [ln for ln in (out + "\n".join(errors)).splitlines() if "cached weights" in ln]
    assert len(notice) == 1 and path.name in notice[0] and "retraining" in notice[0], notice
    assert (path.parent / (path.name + ".rejected")).exists()  # set aside, not deleted
    with ResultStore.open_readonly(db) as store:
        rows = store.rows()
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert rows[1]["weights"] == first["weights"]  # retrained: the same weights again (CPU)


def test_matching_cached_weights_are_reused(
    tmp_path, write_submission, bioprior_home, faulty, one_thread
):
    db = tmp_path / "results.sqlite"
    _score_counted(tmp_path, write_submission, db, 0.0)
    before = _weights(bioprior_home).stat().st_mtime_ns
    out, errors = _score_counted(tmp_path, write_submission, db, 0.001)
    assert "cached weights" not in out + "\n".join(errors)
    assert _weights(bioprior_home).stat().st_mtime_ns == before  # not retrained


# -- 3. plugins that misbehave while imported ------------------------------------------------------
BAD_PLUGINS = {
    "exits": "raise SystemExit(3)\n",
    "markup": "raise ImportError('needs [/x] and [bold]torch[/bold]')\n",
    "os_exit": "import os\nos._exit(0)\n",
    "segfault": "import ctypes\nctypes.string_at(0)\n",
    "slow": "import time\ntime.sleep(5.6)\nraise RuntimeError('slow and broken')\n",
}


def bad_plugin(folder: Path, name: str) -> Path:
    """A distribution ``bioprior-bad-NAME`` whose entry point ``bad_NAME`` runs BAD_PLUGINS[name]
    at import."""
    folder.mkdir(parents=True, exist_ok=True)
    module = f"bioprior_bad_{name}"
    (folder / f"{module}.py").write_text(BAD_PLUGINS[name])
    info = folder / f"bioprior_bad_{name}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: bioprior-bad-{name}\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(f"[bioprior]\nbad_{name} = {module}\n")
    return folder


def run_plugins(folder: Path, *args: str, env: dict | None = None, timeout: float = 120):
    from conftest import run_cli

    extra = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    return run_cli(*args, env={"PYTHONPATH": extra, **(env or {})}, timeout=timeout)


@pytest.mark.parametrize("name", ["exits", "markup"])
def test_a_plugin_that_raises_anything_at_import_is_a_plugin_error(tmp_path, monkeypatch, name):
    from bioprior.registry.hooks.loading import set_registry

    folder = bad_plugin(tmp_path / "plugins", name)
    monkeypatch.syspath_prepend(str(folder))
    set_registry(None)
    code, out, errors = cli("plugins")  # the table: what the plugin said is text
    assert code == 0, (out, errors)
    assert f"failed bioprior-bad-{name} 0.1 (bad_{name}): import failed" in out
    code, out, errors = cli("plugins", "--json")
    (error,) = [p["error"] for p in json.loads(out) if p["name"] == f"bad_{name}"]
    assert error.endswith(
        f"skip it with `bioprior --skip-plugin bad_{name}` or BIOPRIOR_SKIP_PLUGINS=bad_{name}"
    )
    if name == "markup":
        assert "ImportError: needs [/x] and [bold]torch[/bold]" in error
    else:
        assert error.startswith("import failed: SystemExit: the module exited (code 3)")
    assert "small_alexnet" in out  # the others load


def test_a_plugin_that_crashes_the_process_is_named(tmp_path):
    found = run_plugins(bad_plugin(tmp_path / "plugins", "segfault"), "plugins")
    assert found.returncode != 0
    assert "importing plugin bad_segfault (bioprior_bad_segfault)" in found.stderr, found.stderr


def test_a_slow_plugin_is_named_while_it_imports(tmp_path):
    found = run_plugins(bad_plugin(tmp_path / "plugins", "slow"), "plugins", "--json")
    assert found.returncode == 0, found.stderr
    assert (
        "bioprior: still importing plugin bad_slow (bioprior_bad_slow) after 5 s; "
        "skip it with `bioprior --skip-plugin bad_slow`"
    ) in found.stderr
    failed = [p for p in json.loads(found.stdout) if p["name"] == "bad_slow"]
    assert "slow and broken" in failed[0]["error"]


def test_plugins_can_be_skipped_or_selected_by_name(tmp_path):
    folder = bad_plugin(tmp_path / "plugins", "os_exit")
    assert run_plugins(folder, "plugins", "--json").stdout == ""  # it ends the process: skip it
    for args, env in [
        (("--skip-plugin", "bad_os_exit", "plugins", "--json"), {}),
        (("--skip-plugin", "bioprior-bad-os-exit", "plugins", "--json"), {}),
        (("plugins", "--json"), {"BIOPRIOR_SKIP_PLUGINS": "other,bad_os_exit"}),
        (("plugins", "--json"), {"BIOPRIOR_LOAD_PLUGINS": ""}),  # third-party: none
    ]:
        found = run_plugins(folder, *args, env=env)
        assert found.returncode == 0, (args, env, found.stderr)
        names = {p["name"] for p in json.loads(found.stdout)}
        assert "small_alexnet" in names  # built-ins always load
    found = run_plugins(folder, "plugins", env={"BIOPRIOR_LOAD_PLUGINS": "bad_os_exit"})
    assert found.returncode == 0 and found.stdout == ""  # selected: loaded (and it exits)


# -- 4. results databases that are not what they should be -------------------------------------------
def _good(path: Path) -> Path:
    write_store(path, [_row("s", {"a": 0.1}), _row("s", {"a": 0.2})])
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=DELETE")  # one file: what a user copies around
    conn.close()
    return path


def _sql(path: Path, *statements: str) -> Path:
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return path


def _relax_not_null(path: Path) -> Path:
    """The results table as an older or foreign writer left it: no NOT NULL, then NULLs."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute("UPDATE sqlite_master SET sql = replace(sql, 'NOT NULL', '') WHERE name='results'")
    conn.commit()
    conn.close()
    return _sql(path, "UPDATE results SET submission = NULL")


def _pages(path: Path, start: int, fill: bytes | None) -> Path:
    blob = path.read_bytes()
    path.write_bytes(blob[:start] + (fill * (len(blob) - start) if fill else b""))
    return path


HOSTILE_DBS = {
    # name: (make it, what the one line says)
    "empty file": (lambda p: p.write_bytes(b"") and p, "is an empty file"),
    "not SQLite": (lambda p: p.write_text("hello\n" * 300) and p, "is not an SQLite database"),
    "truncated": (lambda p: _pages(_good(p), 6000, None), "malformed"),
    "a directory": (lambda p: p.mkdir() or p, "is a directory"),
    "corrupt pages": (lambda p: _pages(_good(p), 4096, b"\xab"), "malformed"),
    "foreign SQLite": (
        lambda p: _sql(p, "CREATE TABLE t (x)", "INSERT INTO t VALUES (1)"),
        "not a bioprior results",
    ),
    "missing columns": (
        lambda p: _sql(p, "CREATE TABLE results (id INTEGER PRIMARY KEY, submission TEXT)"),
        "column",
    ),
    "malformed JSON": (
        lambda p: _sql(_good(p), "UPDATE results SET metrics = '{not json'"),
        "row 1, column metrics: malformed JSON",
    ),
    "JSON of the wrong type": (
        lambda p: _sql(_good(p), "UPDATE results SET variant = '[1]'"),
        "row 1, column variant: expected a JSON object, found a JSON list [1]",
    ),
    "text in a number column": (
        lambda p: _sql(_good(p), "UPDATE results SET seed = 'zero'"),
        "row 1, column seed: expected an integer, found text 'zero'",
    ),
    "bytes in a text column": (
        lambda p: _sql(_good(p), "UPDATE results SET submission = X'fffe00'"),
        "row 1, column submission: expected text, found bytes",
    ),
    "NULL in a NOT NULL column": (
        lambda p: _relax_not_null(_good(p)),
        "row 1, column submission: expected text, found null",
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE_DBS))
@pytest.mark.parametrize("command", ["results", "report"])
def test_hostile_databases_are_one_line(tmp_path, name, command):
    make, says = HOSTILE_DBS[name]
    db = make(tmp_path / "results.sqlite") or tmp_path / "results.sqlite"
    before = _bytes_of(db)
    args = ["--db", str(db)] + (["-o", str(tmp_path / "site")] if command == "report" else [])
    line = one_line(command, *args)
    assert line.startswith("error: --db: ") and str(db) in line and says in line, line
    assert _bytes_of(db) == before  # read-only: nothing changed, nothing lost


def _bytes_of(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


@pytest.mark.parametrize(
    "name", ["not SQLite", "a directory", "corrupt pages", "foreign SQLite", "missing columns"]
)
def test_score_refuses_a_database_it_cannot_use(tmp_path, write_submission, name):
    from conftest import tiny_submission

    make, _ = HOSTILE_DBS[name]
    db = make(tmp_path / "results.sqlite") or tmp_path / "results.sqlite"
    before = _bytes_of(db)
    line = one_line("score", str(write_submission(tiny_submission())), "--db", str(db))
    assert line.startswith("error: --db: ") and str(db) in line, line
    if name != "corrupt pages":  # (its first page is sound: SQLite switches it to WAL first)
        assert _bytes_of(db) == before  # no table added to someone else's database
    assert not (tmp_path / "home" / "weights").exists() or not any(
        (tmp_path / "home" / "weights").iterdir()
    )  # refused before anything trained


def test_score_refuses_a_not_null_column_it_cannot_fill(tmp_path, write_submission):
    from conftest import tiny_submission

    from bioprior.registry.store.results import SCHEMA

    db = tmp_path / "results.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(SCHEMA.replace("provenance TEXT,", "provenance TEXT, owner TEXT NOT NULL,"))
    conn.close()
    line = one_line("score", str(write_submission(tiny_submission())), "--db", str(db))
    assert "owner" in line and "NOT NULL" in line and str(db) in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes read-only files anyway")
def test_read_only_database_and_folder(tmp_path, write_submission):
    from conftest import tiny_submission

    folder = tmp_path / "ro"
    folder.mkdir()
    db = _good(folder / "results.sqlite")
    db.chmod(0o444)
    folder.chmod(0o555)
    try:
        assert cli("results", "--db", str(db))[0] == 0
        assert cli("report", "--db", str(db), "-o", str(tmp_path / "site"))[0] == 0
        line = one_line("score", str(write_submission(tiny_submission())), "--db", str(db))
        assert line.startswith("error: --db: ") and "ro" in line
    finally:
        folder.chmod(0o755)


# -- 5. a full disk ------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs (root only; skipped where it cannot be mounted)."""
    import subprocess

    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(where)],
        check=False,
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 512):
            pass
    except OSError:  # the disk is full
        pass
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize("slack_kib", [0, 40, 48, 64])
def test_a_full_disk_is_one_line_and_loses_no_row(small_disk, write_submission, slack_kib):
    """The disk is full when the database opens, or fills while the run claims and stores."""
    from conftest import tiny_submission

    db = write_store(small_disk / "results.sqlite", [_row("kept", {"a": i}) for i in range(5)])
    filler = _fill(small_disk)
    os.truncate(filler, max(0, filler.stat().st_size - slack_kib * 1024))
    line = one_line("score", str(write_submission(tiny_submission())), "--db", str(db))
    assert line.startswith((f"error: --db: {db}", f"error: --db: cannot open {db}"))
    assert "rollback" not in line.lower()
    assert "database or disk is full" in line or "no space left" in line, line
    filler.unlink()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM results WHERE submission = 'kept'").fetchone()[0] == 5
    conn.close()


@pytest.mark.parametrize(
    "exc",
    [
        OSError(28, "No space left on device"),
        OSError(24, "Too many open files"),
        sqlite3.OperationalError("database or disk is full"),
    ],
)
def test_resource_failures_have_their_own_retried_class(exc):
    from bioprior.registry.base.failures import (
        RETRYABLE,
        classify_error_text,
        classify_exception,
    )

    assert classify_exception(exc) == "resource_error" in RETRYABLE
    assert classify_error_text(f"{type(exc).__name__}: {exc}") == "resource_error"
    assert classify_exception(FileNotFoundError(2, "No such file")) == "plugin_error"


# -- 6. validation gaps --------------------------------------------------------------------------------
def test_memorization_random_params_are_checked_at_validate(write_submission):
    from conftest import tiny_submission

    def validate(random_params: dict, random: str = "gaussian_noise") -> tuple[int, list[str]]:
        bench = {
            "name": "memorization",
            "params": {"random": random, "random_params": random_params},
        }
        sub = write_submission(tiny_submission(benchmarks=[bench]))
        code, _, errors = cli("validate", str(sub))
        return code, errors

    code, errors = validate({"include_tset": False})
    assert code == 2 and len(errors) == 1, errors
    assert "random_params: unknown key 'include_tset' for gaussian_noise" in errors[0]
    assert "include_test" in errors[0]  # what is known
    code, errors = validate({"fraction": 2.0}, "random_labels")
    assert code == 2 and "random_params: fraction" in errors[0], errors
    assert validate({"include_test": False})[0] == 0
    assert validate({"fraction": 0.5}, "random_labels")[0] == 0
