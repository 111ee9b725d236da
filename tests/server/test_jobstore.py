"""server.services.jobstore on a real SQLite file: CRUD, filters and paging, JSON columns, survival across a
reopen (a server restart), and the module's claim that request threads and the watcher thread (and two
stores on one file, as after a restart while the old process still writes) can use it at once."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from server.services.jobstore import ACTIVE, FINAL, JobStore


def _add(store: JobStore, kind: str = "train", name: str = "run", **extra) -> int:
    return store.insert(
        kind=kind,
        name=name,
        config={"epochs": 2, "nested": {"a": [1, 2]}},
        argv=["python", "-m", "trainer", "--name", name],
        output_dir=f"/runs/{name}",
        progress_path=f"/runs/{name}/metrics.jsonl",
        log_path=f"/runs/{name}/log.txt",
        **extra,
    )


def test_insert_then_get(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "state" / "jobs.db")  # parent directory created
    before = time.time()
    job_id = _add(store, done_path="/runs/run/done")
    row = store.get(job_id)
    assert row is not None and row.id == job_id
    assert (row.kind, row.name, row.status, row.pid) == ("train", "run", "running", None)
    assert row.config == {"epochs": 2, "nested": {"a": [1, 2]}}  # decoded JSON
    assert row.argv == ["python", "-m", "trainer", "--name", "run"]
    assert (row.output_dir, row.progress_path, row.log_path, row.done_path) == (
        "/runs/run",
        "/runs/run/metrics.jsonl",
        "/runs/run/log.txt",
        "/runs/run/done",
    )
    assert before <= row.created_at <= time.time()
    assert row.started_at is row.finished_at is row.exit_code is row.message is None
    assert row.active
    assert store.get(job_id + 1) is None


def test_update_sets_columns_and_encodes_json(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    job_id = _add(store)
    store.update(job_id, pid=4242, started_at=12.5, argv=["a", "b"], config={"x": 1})
    row = store.get(job_id)
    assert (row.pid, row.started_at, row.argv, row.config) == (4242, 12.5, ["a", "b"], {"x": 1})
    store.update(job_id, status="succeeded", exit_code=0, finished_at=20.0, message="done")
    row = store.get(job_id)
    assert (row.status, row.exit_code, row.finished_at, row.message) == ("succeeded", 0, 20.0, "done")
    assert not row.active
    store.update(job_id)  # nothing to set: a no-op
    assert store.get(job_id) == row


def test_update_of_an_unknown_column_fails_and_changes_nothing(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    job_id = _add(store)
    before = store.get(job_id)
    with pytest.raises(sqlite3.OperationalError):
        store.update(job_id, status="failed", no_such_column=1)
    assert store.get(job_id) == before


def test_update_of_an_unknown_job_does_nothing(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    _add(store)
    store.update(999, status="failed")
    assert [r.status for r in store.list()] == ["running"]


def test_list_filters_orders_and_pages(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    plan = [
        ("train", "running"),
        ("index", "succeeded"),
        ("train", "failed"),
        ("eval", "stopping"),
        ("index", "running"),
        ("train", "stopped"),
    ]
    ids = []
    for i, (kind, status) in enumerate(plan):
        ids.append(_add(store, kind=kind, name=f"j{i}"))
        store.update(ids[-1], status=status)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [r.id for r in store.list()] == ids[::-1]  # newest first
    assert [r.name for r in store.list(kind="train")] == ["j5", "j2", "j0"]
    assert [r.name for r in store.list(status="running")] == ["j4", "j0"]
    assert [r.name for r in store.list(kind="index", status="running")] == ["j4"]
    assert store.list(kind="nope") == []
    assert [r.name for r in store.list(limit=2)] == ["j5", "j4"]
    assert [r.name for r in store.list(limit=2, offset=2)] == ["j3", "j2"]
    assert store.list(offset=10) == []
    assert [r.name for r in store.active()] == ["j4", "j3", "j0"]
    assert [r.name for r in store.active(kind="train")] == ["j0"]
    assert {r.status for r in store.active()} <= set(ACTIVE)
    assert {r.status for r in store.list() if not r.active} <= set(FINAL)
    assert store.count() == len(plan)


def test_jobs_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    first = JobStore(path)
    a = _add(first, name="a")
    first.update(a, status="succeeded", exit_code=0)
    b = _add(first, name="b")
    again = JobStore(path)  # the schema is created only if missing
    assert again.count() == 2
    assert again.get(a).status == "succeeded" and again.get(b).status == "running"
    c = _add(again, name="c")
    assert c > b  # AUTOINCREMENT: ids are never reused
    with closing(sqlite3.connect(path)) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ids_are_not_reused_after_the_newest_row_is_deleted(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = JobStore(path)
    last = _add(store, name="x")
    with closing(sqlite3.connect(path)) as con, con:
        con.execute("DELETE FROM jobs WHERE id = ?", (last,))
    assert _add(JobStore(path), name="y") == last + 1


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        JobStore(path)


def test_threads_and_two_stores_on_one_file(tmp_path: Path) -> None:
    """Eight writer threads over two JobStore objects on the same file (their own locks, so SQLite's
    locking is what serialises them) plus a reader thread: every insert and update lands, ids stay unique,
    and the reader never sees a half-written row."""
    path = tmp_path / "jobs.db"
    stores = [JobStore(path), JobStore(path)]
    per_thread, ids, errors = 15, [], []
    lock = threading.Lock()
    done = threading.Event()

    def writer(t: int) -> None:
        store = stores[t % 2]
        try:
            for i in range(per_thread):
                job_id = _add(store, kind="index", name=f"t{t}-{i}")
                store.update(job_id, status="succeeded", pid=t * 1000 + i, config={"t": t, "i": i})
                with lock:
                    ids.append(job_id)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def reader() -> None:
        try:
            while not done.is_set():
                for row in stores[0].list(limit=10_000):
                    assert isinstance(row.config, dict) and isinstance(row.argv, list)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    watcher = threading.Thread(target=reader)
    watcher.start()
    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    done.set()
    watcher.join(timeout=30)
    assert errors == []
    assert len(ids) == len(set(ids)) == 8 * per_thread
    assert stores[1].count() == 8 * per_thread
    rows = {r.name: r for r in stores[1].list(limit=10_000)}
    for t in range(8):
        for i in range(per_thread):
            r = rows[f"t{t}-{i}"]
            assert (r.status, r.pid, r.config) == ("succeeded", t * 1000 + i, {"t": t, "i": i})
