"""Where a study lives: SQLite (one worker), a journal file (workers on one host), or any
SQLAlchemy URL such as PostgreSQL (workers on many hosts).

Storage strings: ``sqlite:///FILE``, ``journal:FILE``, ``postgresql+psycopg2://user:pass@host/db``
(and any other SQLAlchemy URL). With no ``--storage`` the study folder decides: an existing
``journal.log`` or ``study.db`` there is reused; a new study gets ``study.db`` (SQLite) for one
worker and ``journal.log`` for several, because SQLite is not for parallel writers.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

from ordinalage.errors import UsageError

SQLITE_FILE = "study.db"
JOURNAL_FILE = "journal.log"
HEARTBEAT_S = 30  # server databases: a trial whose worker stops beating for GRACE_S is marked failed
GRACE_S = 120


def mask(url: str) -> str:
    """The URL without its password, for messages and result files."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def resolve_storage(storage: str | None, study_dir: Path, workers: int) -> str:
    """The storage string to use; checks that it suits `workers` parallel processes."""
    if storage is None:
        journal, sqlite = study_dir / JOURNAL_FILE, study_dir / SQLITE_FILE
        if journal.exists():
            return f"journal:{journal}"
        if sqlite.exists():
            if workers > 1:
                raise UsageError(f"{sqlite}: this study lives in SQLite, which is for one worker; rerun it with "
                                 "`workers` 1, or give `storage` journal:FILE or a PostgreSQL URL for a new study",
                                 option="workers")
            return f"sqlite:///{sqlite}"
        return f"journal:{journal}" if workers > 1 else f"sqlite:///{sqlite}"
    if storage.startswith("journal:"):
        if not storage[len("journal:"):]:
            raise UsageError("storage journal:FILE: the file name is missing", option="storage")
        return storage
    if "://" not in storage:
        raise UsageError(f"storage {storage!r}: expected sqlite:///FILE, journal:FILE or a database URL "
                         "such as postgresql+psycopg2://user:password@host:5432/db", option="storage")
    if storage.startswith("sqlite:") and workers > 1:
        raise UsageError(f"storage {storage}: SQLite is not for parallel workers; use journal:FILE on one host "
                         "or a PostgreSQL URL", option="storage")
    return storage


def storage_kind(url: str) -> str:
    if url.startswith("journal:"):
        return "journal"
    if url.startswith("sqlite:"):
        return "sqlite"
    return "rdb"


def open_storage(url: str) -> Any:
    """An Optuna storage object for `url`; connection problems become a UsageError naming the URL."""
    import optuna
    import sqlalchemy.exc

    kind = storage_kind(url)
    if kind == "journal":
        path = Path(url[len("journal:"):])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = optuna.storages.journal.JournalFileOpenLock(str(path)) if os.name == "nt" else None
            backend = optuna.storages.journal.JournalFileBackend(str(path), lock_obj=lock)
        except OSError as exc:
            raise UsageError(f"storage {url}: cannot open the journal file ({exc.strerror or exc})",
                             option="storage") from None
        return optuna.storages.JournalStorage(backend)
    try:
        if kind == "sqlite":
            db = url.split(":///", 1)[1] if ":///" in url else ""
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True},
                                              heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    except ModuleNotFoundError as exc:
        raise UsageError(f"storage {mask(url)}: the database driver is not installed ({exc.name}); "
                         "for PostgreSQL: pip install psycopg2-binary", option="storage") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"storage {mask(url)}: cannot open the study database ({first})", option="storage") from None
