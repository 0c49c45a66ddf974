"""A private PostgreSQL server for the tests: its own data directory (initdb), 127.0.0.1 and a
free port, password (SCRAM) authentication, stopped at the end. The machine's own clusters are
untouched. PostgreSQL refuses to run as root: as root, its programs run as the ``postgres``
user (Debian's package creates it)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "mailgem"
PASSWORD = "pg-Test-only-5b1d-Zq"  # tests assert it never leaks


def _bindir() -> Path | None:
    """Where initdb and pg_ctl are: ``pg_config --bindir``, Debian's versioned folder, or PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``start()`` raises ``RuntimeError`` with the reason when the server cannot be started.

    ``durable``: commits reach the disk (fsync, synchronous_commit), as on a real server; the
    tests leave it off (faster), the benchmarks turn it on."""

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable
        self.dir = Path(tempfile.mkdtemp(prefix="mailgem-pg-"))
        self.port = _free_port()
        self._as: list[str] = []
        self._bin: Path | None = None

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresServer:
        self._bin = _bindir()
        if self._bin is None:
            raise RuntimeError("PostgreSQL's server programs (initdb, pg_ctl) are not installed: "
                               "apt-get install postgresql")
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no postgres user to run the server as") from None
            self._as = ["runuser", "-u", "postgres", "--"]
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD)
        if self._as:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        init = self._run(str(self._bin / "initdb"), "-D", str(self.dir / "data"), "-U", USER, "--auth=scram-sha-256",
                         f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync")
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()[-500:]}")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=100"
                   + ("" if self.durable else " -c fsync=off -c synchronous_commit=off"))
        started = self._run(str(self._bin / "pg_ctl"), "-D", str(self.dir / "data"), "-o", options,
                            "-l", str(self.dir / "log"), "-w", "-t", "60", "start")
        if started.returncode != 0:
            log = (self.dir / "log").read_text()[-1000:] if (self.dir / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()[-500:]} {log}")
        return self

    def url(self, database: str = "postgres") -> str:
        """The database's URL, without the password (as a job file names it)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), password=PASSWORD, autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self._bin is not None and (self.dir / "data" / "postmaster.pid").exists():
            self._run(str(self._bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
