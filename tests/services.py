"""Services some tests need (headless Chromium, PostgreSQL), and the rule that CI may not skip them.

Locally a test whose service is missing skips with the reason. In CI, `.ci/run` sets
FER_TUNE_REQUIRE=browser,postgres: tests/conftest.py then turns every skip into a failure but the
ones CI cannot avoid (ALLOWED_SKIPS: no CUDA device there), so a green CI means the browser and
PostgreSQL tests ran, and so did every test that skips for a missing module (`importorskip`) or any
other reason. The failure names the service a skip reason is about, where it names one.

PostgreSQL: FER_TUNE_POSTGRES is a libpq URI of a role that may create databases (`.ci/run` makes
one); `postgres_database()` creates a throwaway database for one test and drops it after.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager

import pytest

REQUIRE_ENV = "FER_TUNE_REQUIRE"
SERVICES = {  # service -> words a skip reason for it contains
    "browser": ("chromium", "chromedriver"),
    "postgres": ("postgresql",),
}
POSTGRES_ENV = "FER_TUNE_POSTGRES"
POSTGRES_ADMIN = "postgresql://fer_tune_test:fer_tune_test@127.0.0.1:5432/postgres"  # .ci/run creates this role
POSTGRES_HINT = "start it (pg_ctlcluster 15 main start) and create the role as .ci/run does, or set FER_TUNE_POSTGRES"


ALLOWED_SKIPS = ("needs a CUDA device",)  # CI has no GPU (tests/conftest.py: the `gpu` marker's skip)


def allowed_skip(reason: str) -> bool:
    """Whether a skip may stand in a run that requires its services (CI): only for want of what CI lacks."""
    return any(allowed in reason for allowed in ALLOWED_SKIPS)


def required() -> set[str]:
    """The services this run must have (FER_TUNE_REQUIRE, comma-separated)."""
    names = {name.strip() for name in os.environ.get(REQUIRE_ENV, "").split(",") if name.strip()}
    unknown = names - set(SERVICES)
    if unknown:
        raise pytest.UsageError(f"{REQUIRE_ENV}: unknown service {sorted(unknown)}; allowed: {sorted(SERVICES)}")
    return names


def service_of(reason: str) -> str | None:
    """The service a skip reason is about, if any."""
    text = reason.lower()
    return next((name for name, words in SERVICES.items() if any(word in text for word in words)), None)


def postgres_admin() -> str:
    return os.environ.get(POSTGRES_ENV, POSTGRES_ADMIN)


def postgres_or_skip() -> str:
    """The admin URI once a connection to it works; else skip naming PostgreSQL and why."""
    try:
        import psycopg
    except ModuleNotFoundError:
        pytest.skip("PostgreSQL tests need psycopg (pip install 'fer-tune[postgres]')")
    admin = postgres_admin()
    try:
        psycopg.connect(admin, connect_timeout=5).close()
    except psycopg.OperationalError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        pytest.skip(f"PostgreSQL is not reachable ({reason}); {POSTGRES_HINT}")
    return admin


@contextmanager
def postgres_database(prefix: str = "fer_tune_test"):
    """A new, empty database for one test: yields its SQLAlchemy URI (psycopg 3), dropped at the end."""
    import psycopg

    admin = postgres_or_skip()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
