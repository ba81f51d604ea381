"""Static checks of docker/compose.yaml, docker/Dockerfile and .dockerignore (no Docker daemon needed)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER_DIR = REPO / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "compose.yaml must be a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose.get("services") or {}


def _env(service: dict) -> dict[str, str]:
    """Compose allows environment as a mapping or as a list of KEY=VALUE strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _depends_on(service: dict) -> list[str]:
    dep = service.get("depends_on") or []
    return list(dep) if isinstance(dep, list | dict) else [dep]


def _volume_source(volume) -> str | None:
    """Source of a service volume in short ('src:dst[:mode]') or long ({type, source}) syntax."""
    if isinstance(volume, dict):
        return volume.get("source")
    parts = str(volume).split(":")
    return parts[0] if len(parts) > 1 else None  # a bare path is an anonymous volume


def _is_named_volume(source: str) -> bool:
    return not source.startswith((".", "/", "~", "$"))


def _port_targets(ports) -> set[int]:
    targets: set[int] = set()
    for port in ports or []:
        if isinstance(port, dict):
            targets.add(int(port["target"]))
        else:
            spec = str(port).split("/")[0]  # drop /tcp, /udp
            targets.add(int(spec.rsplit(":", 1)[-1]))
    return targets


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    instructions: list[tuple[str, str]] = []
    buffer = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        keyword, _, args = buffer.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        buffer = ""
    assert not buffer, "Dockerfile ends with a dangling line continuation"
    return instructions


def _copy_sources(args: str) -> list[str]:
    if args.startswith("["):
        parts = json.loads(args)
    else:
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
    return parts[:-1]  # the last one is the destination


def _dockerignore_patterns() -> list[str]:
    if not DOCKERIGNORE.exists():
        return []
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line.rstrip("/") for line in lines if line and not line.startswith("#")]


# --------------------------------------------------------------------------- compose.yaml


def test_compose_has_both_services(services: dict) -> None:
    assert {"qdrant", "shopsearch"} <= set(services)


def test_qdrant_image_is_pinned(services: dict) -> None:
    image = services["qdrant"]["image"]
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    assert name.endswith("qdrant/qdrant"), image
    assert tag and tag != "latest", f"qdrant image must be pinned to a version tag, got {image!r}"
    assert re.fullmatch(r"v?\d+\.\d+\.\d+.*", tag), f"expected a version tag, got {tag!r}"


def test_qdrant_ports(services: dict) -> None:
    targets = _port_targets(services["qdrant"].get("ports"))
    assert 6333 in targets, "REST port 6333 must be published"
    assert 6334 in targets, "gRPC port 6334 must be published"


def test_qdrant_storage_is_a_named_volume(services: dict) -> None:
    volumes = services["qdrant"].get("volumes") or []
    for volume in volumes:
        target = volume.get("target") if isinstance(volume, dict) else str(volume).split(":")[1]
        source = _volume_source(volume)
        if target == "/qdrant/storage":
            assert source and _is_named_volume(source), volume
            return
    pytest.fail("qdrant has no volume for /qdrant/storage")


def test_qdrant_healthcheck_uses_no_missing_tools(services: dict) -> None:
    """The official qdrant image has neither curl nor wget."""
    health = services["qdrant"].get("healthcheck")
    if health is None:
        return
    test = health["test"]
    command = " ".join(test) if isinstance(test, list) else str(test)
    assert "curl" not in command and "wget" not in command, command
    assert "6333" in command


def test_shopsearch_build_resolves(services: dict) -> None:
    build = services["shopsearch"]["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
    assert context.is_dir(), context
    assert context == REPO, f"build context should be the repository root, got {context}"
    dockerfile = (context / build.get("dockerfile", "Dockerfile")).resolve()
    assert dockerfile.is_file(), dockerfile
    assert dockerfile == DOCKERFILE.resolve()


def test_shopsearch_points_at_qdrant_service(services: dict) -> None:
    url = _env(services["shopsearch"]).get("SHOPSEARCH_QDRANT_URL")
    assert url, "shopsearch needs SHOPSEARCH_QDRANT_URL"
    parsed = urlparse(url)
    assert parsed.scheme in {"http", "https"}, url
    assert parsed.hostname == "qdrant", f"must address the compose service name, got {url!r}"
    assert parsed.port == 6333, url


def test_shopsearch_depends_on_qdrant(services: dict) -> None:
    service = services["shopsearch"]
    assert "qdrant" in _depends_on(service)
    dep = service["depends_on"]
    if isinstance(dep, dict):
        condition = (dep["qdrant"] or {}).get("condition", "service_started")
        if condition == "service_healthy":
            assert "healthcheck" in services["qdrant"], "service_healthy needs a qdrant healthcheck"


def test_shopsearch_mounts_data(services: dict) -> None:
    volumes = services["shopsearch"].get("volumes") or []
    targets = [v.get("target") if isinstance(v, dict) else str(v).split(":")[1] for v in volumes]
    assert "/data" in targets


def test_named_volumes_are_declared(compose: dict, services: dict) -> None:
    declared = set((compose.get("volumes") or {}).keys())
    used = {
        source
        for service in services.values()
        for volume in service.get("volumes") or []
        if (source := _volume_source(volume)) and _is_named_volume(source)
    }
    assert used, "expected at least the qdrant storage volume"
    missing = used - declared
    assert not missing, f"named volumes used but not declared at top level: {sorted(missing)}"


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_base_image() -> None:
    froms = [args for kw, args in _dockerfile_instructions() if kw == "FROM"]
    assert froms and froms[0].split()[0].startswith("python:3.11-slim"), froms


def test_dockerfile_copy_sources_exist() -> None:
    copies = [args for kw, args in _dockerfile_instructions() if kw in {"COPY", "ADD"}]
    assert copies, "Dockerfile copies nothing"
    missing = [
        src
        for args in copies
        if "--from=" not in args  # multi-stage copies come from another image
        for src in _copy_sources(args)
        if not (REPO / src).exists()
    ]
    assert not missing, f"COPY sources missing from the repository: {missing}"


def test_dockerfile_copies_are_not_dockerignored() -> None:
    patterns = _dockerignore_patterns()
    ignored = [
        src.rstrip("/")
        for kw, args in _dockerfile_instructions()
        if kw in {"COPY", "ADD"} and "--from=" not in args
        for src in _copy_sources(args)
        if any(fnmatch.fnmatch(src.rstrip("/"), pat) for pat in patterns if not pat.startswith("!"))
    ]
    assert not ignored, f".dockerignore excludes files the Dockerfile copies: {ignored}"


def test_dockerfile_copies_every_package() -> None:
    copied = {
        src.rstrip("/")
        for kw, args in _dockerfile_instructions()
        if kw == "COPY"
        for src in _copy_sources(args)
    }
    for needed in (
        "pyproject.toml",
        "catalog",
        "retrieval",
        "rerank",
        "indexer",
        "evaluation",
        "shopsearch",
    ):
        assert needed in copied, f"Dockerfile does not copy {needed}"


def test_torch_installed_from_index_before_package() -> None:
    instructions = _dockerfile_instructions()
    args = {a.split("=", 1)[0]: a for kw, a in instructions if kw == "ARG"}
    assert "TORCH_INDEX_URL" in args, "missing ARG TORCH_INDEX_URL"
    assert "download.pytorch.org/whl/cpu" in args["TORCH_INDEX_URL"], (
        "default should be the CPU index"
    )

    runs = [(i, a) for i, (kw, a) in enumerate(instructions) if kw == "RUN"]
    torch_runs = [
        i
        for i, a in runs
        if re.search(r"\btorch==", a)
        and re.search(r"--(extra-)?index-url\s+\"?\$\{?TORCH_INDEX_URL", a)
    ]
    pkg_runs = [i for i, a in runs if re.search(r"pip install\b.*\s\.(\s|$)", a)]
    assert torch_runs, "torch must be installed with --index-url $TORCH_INDEX_URL"
    assert pkg_runs, "the Dockerfile must `pip install .`"
    assert min(torch_runs) < min(pkg_runs), "torch must be installed before `pip install .`"
    arg_pos = next(
        i for i, (kw, a) in enumerate(instructions) if kw == "ARG" and "TORCH_INDEX_URL" in a
    )
    assert arg_pos < min(torch_runs)


def test_dockerfile_runs_as_non_root_with_entrypoint() -> None:
    instructions = _dockerfile_instructions()
    users = [a for kw, a in instructions if kw == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "image must not run as root"
    entrypoints = [a for kw, a in instructions if kw == "ENTRYPOINT"]
    assert entrypoints, "missing ENTRYPOINT"
    assert entrypoints[-1].replace(" ", "") == '["shopsearch"]', entrypoints[-1]


def test_dockerfile_is_offline_for_models() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"HF_HUB_OFFLINE=1", text)
    assert re.search(r"TRANSFORMERS_OFFLINE=1", text)


def test_dockerignore_excludes_local_state() -> None:
    patterns = set(_dockerignore_patterns())
    for entry in (".venv", ".git", "demo-run", "runs"):
        assert entry in patterns, f".dockerignore should exclude {entry}"


# --------------------------------------------------------------------------- docker compose


def _compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@pytest.mark.skipif(
    not _compose_available(),
    reason="`docker compose version` fails here (no docker CLI or no compose plugin)",
)
def test_docker_compose_config_validates() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
