"""A throwaway PostgreSQL server on 127.0.0.1 for the tests that need one.

Uses the server binaries of the machine (Debian's ``postgresql`` package:
``/usr/lib/postgresql/<version>/bin``, or ``initdb`` on ``PATH``). The
cluster lives in a temporary directory, listens on 127.0.0.1 only, on a free
port, and is stopped and removed at the end. It is set up as
docs/howto/postgres.md sets up Debian's own server: connections over TCP
must give a password (``scram-sha-256``, Debian's default), and the tests
connect as the role ``aiobound`` (password ``aiobound``) to the database
``aiobound`` it owns, with the DSN the page gives (on another port).
PostgreSQL refuses to run as root: as root, the server runs as the
``postgres`` user (or ``nobody``) through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from typing import TYPE_CHECKING

ROLE = "aiobound"  # the role, its password, and its database
SUPERUSER_PASSWORD = "aiobound-tests"

if TYPE_CHECKING:
    from collections.abc import Iterator


def find_bin_dir() -> str | None:
    """The directory of ``initdb`` and ``pg_ctl``, or None if not installed."""
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(found)
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0,
    )
    return os.path.dirname(versions[-1]) if versions else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_as() -> str | None:
    """The user to run the server as, when this process is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user")


@contextlib.contextmanager
def postgres_server(bin_dir: str) -> Iterator[str]:
    """Start a server; yield the DSN of its ``aiobound`` role; stop it on exit."""
    import psycopg

    user = _run_as()
    root = tempfile.mkdtemp(prefix="aiobound-pg-")
    data = os.path.join(root, "data")
    password_file = os.path.join(root, "password")
    with open(password_file, "w") as file:
        file.write(SUPERUSER_PASSWORD)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        os.chown(password_file, entry.pw_uid, entry.pw_gid)
    prefix = [] if user is None else ["runuser", "-u", user, "--"]

    def run(*args: str) -> None:
        done = subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({done.returncode}):\n"
                f"{done.stdout}\n{done.stderr}"
            )

    port = _free_port()
    try:
        run(
            os.path.join(bin_dir, "initdb"),
            "-D",
            data,
            "-U",
            "postgres",
            f"--pwfile={password_file}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        run(
            os.path.join(bin_dir, "pg_ctl"),
            "-D",
            data,
            "-o",
            options,
            "-l",
            os.path.join(root, "log"),
            "-w",
            "-t",
            "30",
            "start",
        )
        try:
            admin = f"postgresql://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{port}"
            with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
                # As docs/howto/postgres.md creates them.
                conn.execute("CREATE ROLE aiobound LOGIN PASSWORD 'aiobound'")
                conn.execute("CREATE DATABASE aiobound OWNER aiobound")
            yield f"postgresql://{ROLE}:{ROLE}@127.0.0.1:{port}/{ROLE}"
        finally:
            run(
                os.path.join(bin_dir, "pg_ctl"),
                "-D",
                data,
                "-m",
                "immediate",
                "-w",
                "stop",
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
