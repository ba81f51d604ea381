"""A throw-away PostgreSQL server for tests: initdb in a temporary folder, pg_ctl start on a
unix socket there (no TCP port to collide on), stopped and deleted at teardown.

``initdb`` refuses to run as root: as root the server runs as the ``postgres`` user (Debian's
``postgresql`` package creates it). ``find_binaries()`` is None when PostgreSQL is not
installed, and the tests that need a server skip saying so (``.ci/run`` installs it).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

PORT = 55432  # only names the socket file (.s.PGSQL.55432) in the server's own folder


def find_binaries() -> Path | None:
    """The folder with initdb and pg_ctl (PATH, else Debian's /usr/lib/postgresql/N/bin)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def why_not() -> str | None:
    """Why no server can be started here (None: it can)."""
    if find_binaries() is None:
        return "PostgreSQL is not installed (initdb, pg_ctl): apt-get install postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run initdb as"
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install -e '.[postgres]'"
    return None


@dataclass
class Server:
    """A started server: ``url`` reaches its ``postgres`` database as its superuser."""

    root: Path
    bindir: Path
    prefix: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://shopsearch@/{database}?host={self.root}&port={PORT}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.split("/")[3].split("?")[0]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        subprocess.run(
            [*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start() -> Server:
    """Start a server (raises RuntimeError with its log when it does not start)."""
    bindir = find_binaries()
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="shopsearch-pg-"))  # /tmp: the postgres user can enter
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    server = Server(root, bindir, prefix)
    log = root / "server.log"
    steps = [
        [str(bindir / "initdb"), "-D", str(server.data), "-U", "shopsearch", "--auth=trust"]
        + ["-E", "UTF8", "--no-sync"],
        [str(bindir / "pg_ctl"), "-D", str(server.data), "-l", str(log), "-w", "-t", "60"]
        + ["-o", f"-k {root} -p {PORT} -c listen_addresses='' -c fsync=off", "start"],
    ]
    for step in steps:
        done = subprocess.run([*prefix, *step], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            text = done.stdout + done.stderr + (log.read_text() if log.exists() else "")
            server.stop()
            raise RuntimeError(f"{Path(step[0]).name} failed:\n{text[-3000:]}")
    return server
