"""A throwaway PostgreSQL cluster started from the installed binaries, for tests.

PostgreSQL refuses to run as root, so as root the binaries run as the ``postgres`` user in a
temporary directory that user owns. The cluster listens on its own free port on 127.0.0.1
and its own socket directory; the machine's own server is never touched.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from sweeps_helpers import free_port


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl live, or None when PostgreSQL is not installed."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    which = shutil.which("pg_ctl")
    if which:
        candidates.insert(0, str(Path(which).resolve().parent))
    for path in candidates:
        if (Path(path) / "initdb").exists() and (Path(path) / "pg_ctl").exists():
            return Path(path)
    return None


class PostgresCluster:
    """One initdb'd cluster: `start`, `stop`, `restart`, `url`, `create_database`, `destroy`."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="sweeps-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root)
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed: {result.stderr}{result.stdout}\n{log}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            "pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.log), "-o", options
        )

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self) -> Any:
        """An autocommit connection as the superuser, to the ``postgres`` database."""
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        )

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy URL."""
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def database_for(self, url: str, name: str) -> str:
        """A fresh database ``name`` on this cluster owned by ``url``'s user (created if
        missing); ``url`` pointed at it, its user and password kept (the cluster trusts local
        connections, so any password works, and the processes still carry it)."""
        import sqlalchemy

        parsed = sqlalchemy.make_url(url)
        role = parsed.username
        with self._admin() as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(f'CREATE ROLE "{role}" LOGIN')
            conn.execute(f'CREATE DATABASE "{name}" OWNER "{role}"')
        local = parsed.set(host="127.0.0.1", port=self.port, database=name)
        return local.render_as_string(hide_password=False)

    def password_role(self, role: str, password: str) -> None:
        """Create login ``role`` whose connections over TCP must give ``password`` (every
        other role stays trusted): a server that refuses a wrong password."""
        import psycopg
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
            hba = Path(conn.execute("SHOW hba_file").fetchone()[0])  # type: ignore[index]
        # The first matching line decides: this one goes before the cluster's "trust" lines.
        hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        self._run("pg_ctl", "reload", "-D", str(self.data))
        for _ in range(100):  # the server rereads the file soon after the signal
            try:
                psycopg.connect(
                    host="127.0.0.1", port=self.port, user=role, dbname="postgres", password=""
                ).close()
            except psycopg.OperationalError:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the server still trusts {role} after a reload")

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
