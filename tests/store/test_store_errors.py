"""A store file that cannot serve is one StoreError naming it, never a sqlite3 traceback.

Corrupt, truncated, not a database, read-only, in a read-only folder, a newer schema:
each is refused when the store is opened (or, for a page found corrupt later, when it is
read), with the file's path and what to do. A store another process holds is waited
for, then a TransientError.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from freight import StoreError, TransientError
from freight.store import SqliteStore, open_store
from freight.store._migrations import MIGRATIONS
from freight.store._sqlite import store_error


def a_store(path: Path, jobs: int = 60) -> Path:
    """A store holding ``jobs`` runs, its WAL folded into the file (as after a clean exit)."""
    store = SqliteStore(path)
    for i in range(jobs):
        store.create_job(name=f"j{i}", job_type="bulk", fingerprint="f", config={"pad": "x" * 400})
    store.close()
    assert not path.with_name(path.name + "-wal").exists()
    return path


def refused(path: Path | str) -> str:
    """Open the store at ``path``; return the StoreError's message (one line)."""
    with pytest.raises(StoreError) as caught:
        SqliteStore(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_file_that_is_not_a_database_is_named(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"not a database, just some text\n" * 64)
    assert refused(path) == (
        f"the store {path} is not a SQLite database (it holds something else); "
        "move it away or give another store path"
    )
    assert path.read_bytes().startswith(b"not a database")  # left as it was
    with pytest.raises(StoreError, match="is not a SQLite database"):
        open_store(f"sqlite:///{path}")


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_truncated_store_is_named_with_its_sizes(tmp_path: Path, keep: float) -> None:
    path = a_store(tmp_path / "s.db")
    size = path.stat().st_size
    os.truncate(path, int(size * keep))
    message = refused(path)
    assert message.startswith(f"the store {path} is truncated: ")
    assert f"where its header says {size:,}" in message


@pytest.mark.parametrize("length", [5, 60])
def test_a_store_cut_inside_its_header_is_truncated(tmp_path: Path, length: int) -> None:
    path = a_store(tmp_path / "s.db")
    os.truncate(path, length)
    assert refused(path).startswith(f"the store {path} is truncated ({length} bytes")


def test_an_empty_file_is_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.touch()
    store = SqliteStore(path)
    assert store.schema_version == len(MIGRATIONS)
    store.close()


def test_a_store_whose_first_page_is_corrupt_is_refused_when_opened(tmp_path: Path) -> None:
    path = a_store(tmp_path / "s.db")
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\xff" * (len(data) - 100))
    message = refused(path)
    assert message.startswith(f"the store {path} is corrupt (")
    assert message.endswith("restore it from a backup or move it away")


def test_a_page_found_corrupt_later_is_the_same_error(tmp_path: Path) -> None:
    path = a_store(tmp_path / "s.db", jobs=300)
    with sqlite3.connect(path) as db:
        try:  # the pages holding the runs' rows (SQLite's dbstat table, where built in)
            leaves = db.execute(
                "SELECT pageno FROM dbstat WHERE name = 'jobs' AND pagetype = 'leaf'"
            ).fetchall()
        except sqlite3.OperationalError:
            pytest.skip("this SQLite has no dbstat table to find the pages of a table")
        [(page,)] = db.execute("PRAGMA page_size").fetchall()
    db.close()
    assert len(leaves) > 5
    with path.open("r+b") as file:
        for (number,) in leaves:
            file.seek((number - 1) * page)
            file.write(b"\xa5" * page)
    store = SqliteStore(path)  # the schema is intact: it opens
    try:
        with pytest.raises(StoreError, match=f"the store {path} is corrupt"):
            store.list_jobs()
    finally:
        store.close()


def test_a_folder_is_not_a_store(tmp_path: Path) -> None:
    assert refused(tmp_path) == (
        f"the store {tmp_path} is a folder; give a file path such as {tmp_path / 'freight.db'}"
    )


def test_a_newer_schema_is_refused_naming_the_store(tmp_path: Path) -> None:
    path = a_store(tmp_path / "s.db", jobs=1)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    db.close()
    assert refused(path) == (
        f"the store SqliteStore({str(path)!r}) has schema version {len(MIGRATIONS) + 5}, "
        f"newer than this freight knows ({len(MIGRATIONS)}); upgrade freight"
    )


# -- read-only files and folders ---------------------------------------------------------------


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` unwritable for this process, even for root (an immutable file or folder
    there); skip where the machine does not allow it."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], check=False).returncode:
        pytest.skip("cannot make a path read-only for root here (chattr +i refused)")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def test_a_read_only_store_is_refused_when_opened(tmp_path: Path) -> None:
    path = a_store(tmp_path / "s.db", jobs=2)
    with read_only(path):
        message = refused(path)
    assert message == (
        f"the store {path} is read-only (attempt to write a readonly database); freight "
        "writes its runs there: make it writable or give another store path"
    )
    SqliteStore(path).close()  # writable again: opens


def test_a_store_in_a_read_only_folder_is_refused_naming_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    existing = a_store(folder / "old.db", jobs=1)
    with read_only(folder):
        for path in (existing, folder / "new.db"):
            assert refused(path) == (
                f"cannot open the store {path} (unable to open database file): SQLite must "
                f"write it and create its -wal and -shm files next to it, so {folder} must "
                "be writable"
            )
    assert not (folder / "new.db").exists()


def test_a_read_only_error_met_later_names_the_store(tmp_path: Path) -> None:
    """The mapping itself, on a real SQLITE_READONLY (a connection opened read-only), so
    it is checked on machines where a file cannot be made read-only for this user."""
    path = a_store(tmp_path / "s.db", jobs=1)
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as caught:
        db.execute("DELETE FROM jobs")
    db.close()
    mapped = store_error(caught.value, path, 30.0)
    assert isinstance(mapped, StoreError)
    assert mapped.__cause__ is caught.value
    assert str(mapped).startswith(f"the store {path} is read-only (attempt to write a readonly")


def test_other_errors_pass_through_the_mapping() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    db.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as caught:
        db.execute("INSERT INTO t VALUES (1)")
    db.close()
    assert store_error(caught.value, "s.db", 30.0) is caught.value  # freight's own statement


# -- a store another writer holds ----------------------------------------------------------------


def holding(path: Path) -> sqlite3.Connection:
    """Another connection holding the store's write lock."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_store_locked_past_its_busy_timeout_is_transient_naming_it(tmp_path: Path) -> None:
    path = a_store(tmp_path / "s.db", jobs=1)
    store = SqliteStore(path, busy_timeout=0)
    holder = holding(path)
    try:
        with pytest.raises(TransientError) as caught:
            store.create_job(name="late", job_type="bulk", fingerprint="f", config={})
        assert str(caught.value) == (
            f"the store {path} is locked by another writer (waited 0 s): database is locked"
        )
        assert [j.name for j in store.list_jobs()] == ["j0"]  # reading never waits (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.create_job(name="late", job_type="bulk", fingerprint="f", config={})
    store.close()


def test_a_store_locked_for_a_while_is_waited_for(tmp_path: Path) -> None:
    """The write starts while another connection holds the lock; the holder lets go
    only once the write has begun; the write then completes (nothing is lost)."""
    path = a_store(tmp_path / "s.db", jobs=1)
    store = SqliteStore(path)  # the default busy timeout: 30 s
    began = threading.Event()
    store._db.set_trace_callback(  # the store's own connection reports each statement
        lambda statement: began.set() if statement == "BEGIN IMMEDIATE" else None
    )
    holder = holding(path)

    def release_once_the_write_began() -> None:
        assert began.wait(10)
        holder.execute("COMMIT")

    releaser = threading.Thread(target=release_once_the_write_began)
    releaser.start()
    try:
        job = store.create_job(name="waited", job_type="bulk", fingerprint="f", config={})
    finally:
        releaser.join()
        holder.close()
    assert began.is_set()
    assert store.get_job(job.id) is not None
    store.close()
