"""Throw-away PostgreSQL and Redis servers for benchmarks (``bench-profiles``): started in a
temporary folder on a unix socket (no port to collide on), stopped and deleted afterwards.

PostgreSQL's ``initdb`` refuses root: as root the server runs as the ``postgres`` user (Debian's
``postgresql`` package creates it). The servers keep their defaults (fsync on), as a shop's
would, except that they listen on a socket only; Redis keeps an append-only file.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.errors import ShopsearchError

PG_PORT = 55433  # names the socket file only (.s.PGSQL.55433), in the server's own folder


def postgres_binaries() -> Path | None:
    """The folder with initdb and pg_ctl (PATH, else Debian's /usr/lib/postgresql/N/bin)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


@contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server for the block; yields the URL of its ``postgres`` database.

    Raises:
        ShopsearchError: PostgreSQL is not installed, or the server did not start (its log).
    """
    bindir = postgres_binaries()
    if bindir is None:
        raise ShopsearchError("PostgreSQL is not installed: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="shopsearch-bench-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, log = root / "data", root / "server.log"
    pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        for step in (
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "shopsearch"]
            + ["--auth=trust", "-E", "UTF8"],
            [*pg_ctl, "-l", str(log), "-w", "-t", "60", "start"]
            + ["-o", f"-k {root} -p {PG_PORT} -c listen_addresses=''"],
        ):
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                text = done.stdout + done.stderr + (log.read_text() if log.exists() else "")
                raise ShopsearchError(f"PostgreSQL did not start: {text.strip()[-500:]}")
        yield f"postgresql://shopsearch@/postgres?host={root}&port={PG_PORT}"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def redis() -> Iterator[str]:
    """A Redis server for the block (append-only file, fsync each second: durable as a profile
    store must be); yields its ``unix://`` URL.

    Raises:
        ShopsearchError: redis-server is not installed, or it did not answer within 10 s.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise ShopsearchError("Redis is not installed: apt-get install redis-server")
    root = Path(tempfile.mkdtemp(prefix="shopsearch-bench-redis-"))
    socket = root / "redis.sock"
    proc = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(socket), "--save", "", "--appendonly", "yes"]
        + ["--appendfsync", "everysec", "--dir", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ShopsearchError("redis-server did not start")
            time.sleep(0.05)
        yield f"unix://{socket}"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)
