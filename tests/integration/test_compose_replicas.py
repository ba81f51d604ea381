"""Static checks of the replicas in docker/compose.yaml (no Docker needed): two search replicas
behind one load-balanced port, one shared PostgreSQL profile store, the Qdrant server, a shared
search log, and keys from the environment only (never an empty default); and the replicas'
entry script (docker/replica.sh), run with a stand-in ``shopsearch``."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
KEYS = ("SHOPSEARCH_API_KEY", "SHOPSEARCH_ADMIN_KEY", "SHOPSEARCH_PSEUDONYM_KEY")
PASSWORD = "POSTGRES_PASSWORD"


@pytest.fixture(scope="module")
def text() -> str:
    return (DOCKER / "compose.yaml").read_text()


@pytest.fixture(scope="module")
def services(text: str) -> dict:
    return yaml.safe_load(text)["services"]


def _replicas(services: dict) -> list[tuple[str, dict]]:
    return [(name, s) for name, s in services.items() if "serve" in (s.get("command") or [])[:1]]


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_two_replicas_of_one_service_definition(services: dict) -> None:
    replicas = _replicas(services)
    scale = sum(int((s.get("deploy") or {}).get("replicas", 1)) for _, s in replicas)
    assert scale == 2, [name for name, _ in replicas]
    first, second = (s for _, s in replicas)
    same = {k: v for k, v in first.items() if k != "hostname"}
    assert same == {k: v for k, v in second.items() if k != "hostname"}  # one definition
    assert first["image"] == services["shopsearch"]["image"]  # the image the compose file builds


def test_the_replicas_share_the_store_the_index_and_the_log(services: dict) -> None:
    for _, replica in _replicas(services):
        url = urlparse(_option(replica["command"], "--profiles"))
        assert url.scheme == "postgresql" and url.hostname == "postgres" and url.port == 5432
        assert url.password is None  # the password comes from the environment, not the URL
        assert url.path == "/" + services["postgres"]["environment"]["POSTGRES_DB"]
        assert url.username == services["postgres"]["environment"]["POSTGRES_USER"]
        env = replica["environment"]
        assert urlparse(env["SHOPSEARCH_QDRANT_URL"]).hostname == "qdrant"
        log = env["SHOPSEARCH_SEARCH_LOG"]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in replica["volumes"]}
        assert mounts[log] == "search_log"  # a named volume: the same folder for both
        assert mounts["/replica.sh"] == "./replica.sh" and (DOCKER / "replica.sh").is_file()
        assert replica["entrypoint"] == ["/bin/sh", "/replica.sh"]
        assert {"qdrant", "postgres"} <= set(replica["depends_on"])
        assert _option(replica["command"], "--port") == "8000"
    assert services["postgres"]["image"].split(":")[0] == "postgres"
    assert re.fullmatch(r"\d+(\.\d+)*", services["postgres"]["image"].split(":")[1])


def test_one_port_balances_both_replicas(services: dict) -> None:
    lb = services["lb"]
    assert lb["image"].split(":")[0] == "nginx" and lb["image"].split(":")[1] != "latest"
    assert [p.split(":") for p in lb["ports"]] == [["8000", "8000"]]
    assert not any(s.get("ports") for _, s in _replicas(services))  # reached only through lb
    conf_mount = next(v for v in lb["volumes"] if v.endswith("/etc/nginx/nginx.conf:ro"))
    conf = (DOCKER / conf_mount.split(":")[0]).read_text()
    upstream = re.search(r"upstream (\w+) \{(.*?)\}", conf, re.S)
    assert upstream is not None
    servers = re.findall(r"server ([\w.-]+):(\d+)", upstream.group(2))
    hosts = {s.get("hostname", name) for name, s in _replicas(services)}
    assert {host for host, _ in servers} == hosts and {port for _, port in servers} == {"8000"}
    assert f"proxy_pass http://{upstream.group(1)};" in conf
    assert re.search(r"listen 8000;", conf)
    assert set(lb["depends_on"]) == hosts


def test_keys_come_from_the_environment_never_an_empty_default(text: str, services) -> None:
    # no ${KEY:-...} / ${KEY-...} anywhere for the keys and the password
    for name in (*KEYS, PASSWORD):
        assert not re.search(r"\$\{" + name + r"(:?-|:?\?)", text), name
    for _, replica in _replicas(services):
        env = replica["environment"]
        for name in (*KEYS, PASSWORD):
            assert name in env and env[name] is None, name  # passed through only when set
        assert not any(
            isinstance(v, str) and re.search(r"\$\{\w*(KEY|PASSWORD)\w*:?-\}", v)
            for v in env.values()
        )
    assert services["postgres"]["environment"][PASSWORD] is None


def _entry(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "shopsearch"
    fake.write_text(
        '#!/bin/sh\necho "args=$*"\necho "pg=${PGPASSWORD:-}"\n'
        'echo "raw=${POSTGRES_PASSWORD:-unset}"\necho "qdrant=${SHOPSEARCH_QDRANT_API_KEY:-}"\n'
    )
    fake.chmod(0o755)
    base = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(
        ["sh", str(DOCKER / "replica.sh"), "serve", "--port", "8000"],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_replica_entry_refuses_missing_keys_and_hides_the_password(tmp_path) -> None:
    full = {name: "k" + name for name in KEYS} | {PASSWORD: "pw", "QDRANT_API_KEY": "qk"}
    done = _entry(tmp_path, full)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["args=serve --port 8000", "pg=pw", "raw=unset", "qdrant=qk"]
    for name in (*KEYS, PASSWORD):
        for value in (None, "  "):
            env = {k: v for k, v in full.items() if k != name}
            if value is not None:
                env[name] = value
            done = _entry(tmp_path, env)
            assert done.returncode == 2 and not done.stdout
            assert name in done.stderr and len(done.stderr.strip().splitlines()) == 1
