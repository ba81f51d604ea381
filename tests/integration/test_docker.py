"""Static checks of docker/compose.yaml, docker/Dockerfile and .dockerignore (no Docker daemon needed).

The image's contents are checked from the package metadata: a wheel is built (as the
Dockerfile's build stage does) from the files .dockerignore lets into the context, and every
import of its code must be satisfied by the wheel itself, the standard library or the declared
dependencies; the data files its code reads must be in it too. The tests that build the wheel
(or run docker compose) are marked ``integration``; the static checks are not.
"""

from __future__ import annotations

import ast
import contextlib
import email
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
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


def _stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions split by FROM (a stage starts with its FROM)."""
    stages: list[list[tuple[str, str]]] = []
    for kw, args in _dockerfile_instructions():
        if kw == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((kw, args))
    return stages


def test_image_installs_a_wheel_of_the_whole_context() -> None:
    """No hand-kept list of folders: a wheel is built from the context and installed."""
    assert len(_stages()) >= 2, "expected a build stage and a runtime stage"
    build, runtime = _stages()[0], _stages()[-1]
    stage_name = build[0][1].split()[-1]
    copies = [_copy_sources(a) for kw, a in build if kw == "COPY"]
    assert ["."] in copies, "the build stage should copy the whole (dockerignored) context"
    assert any(kw == "RUN" and re.search(r"pip wheel\b.*--no-deps.*\s\.$", a) for kw, a in build)
    assert any(
        kw == "COPY" and f"--from={stage_name}" in a and "/wheels" in a for kw, a in runtime
    ), "the runtime stage should take the wheel from the build stage"
    assert any(kw == "RUN" and re.search(r"pip install\b.*\.whl", a) for kw, a in runtime)
    # the runtime image holds no copy of the source tree
    assert not [a for kw, a in runtime if kw in {"COPY", "ADD"} and "--from=" not in a]


def _dockerignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for our patterns: a path is out when it or a parent matches."""
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        for pat in patterns:
            if pat.startswith("!"):
                continue
            if fnmatch.fnmatch(prefix, pat) or (
                pat.startswith("**/") and fnmatch.fnmatch(parts[i - 1], pat[3:])
            ):
                return True
    return False


@pytest.fixture(scope="module")
def image_wheel(tmp_path_factory) -> Path:
    """The wheel the Dockerfile's build stage makes: from the context .dockerignore leaves."""
    patterns = _dockerignore_patterns()
    context = tmp_path_factory.mktemp("context")
    for path in sorted(REPO.rglob("*")):
        rel = path.relative_to(REPO).as_posix()
        if path.is_file() and not _dockerignored(rel, patterns):
            (context / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, context / rel)
    out = tmp_path_factory.mktemp("wheels")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", str(out), str(context)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = out.glob("shopsearch-*.whl")
    return wheel


def _wheel_modules(wheel: Path) -> dict[str, str]:
    """Dotted module name -> source, for every .py file in the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        return {
            name[:-3].replace("/", ".").removesuffix(".__init__"): zf.read(name).decode()
            for name in zf.namelist()
            if name.endswith(".py") and ".dist-info/" not in name
        }


def _imports(module: str, source: str, is_package: bool) -> set[str]:
    """Modules a module imports (lazily too), except those only under ``if TYPE_CHECKING``."""
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            # `from pkg import sub` may import a submodule
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def _first_party_names() -> set[str]:
    """Top-level packages of this repository, and the ones it used to have."""
    names = {p.parent.name for p in REPO.glob("*/__init__.py")}
    return names | {"research", "behaviour"}


@pytest.mark.integration
def test_runtime_packages_come_from_the_metadata(image_wheel: Path) -> None:
    modules = _wheel_modules(image_wheel)
    top = {m.split(".")[0] for m in modules}
    assert {"catalog", "evaluation", "retrieval", "personalization", "rerank", "indexer",
            "shopsearch"} <= top, top  # fmt: skip
    assert "research" not in top and "tests" not in top, top
    assert "shopsearch.cli" in modules


@pytest.mark.integration
def test_every_first_party_import_of_the_runtime_is_in_the_image(image_wheel: Path) -> None:
    """What the image's code imports from this repository is in the image (e.g. a package
    the Dockerfile forgot, or runtime code reaching into research/)."""
    modules = _wheel_modules(image_wheel)
    first_party = _first_party_names()
    missing: dict[str, list[str]] = {}
    for module, source in modules.items():
        is_package = f"{module}.__init__" not in modules and any(
            m.startswith(module + ".") for m in modules
        )
        for name in _imports(module, source, is_package):
            if name.split(".")[0] not in first_party:
                continue
            # `from pkg import name` where name is an attribute, not a module, is fine
            if name in modules or name.rsplit(".", 1)[0] in modules:
                continue
            missing.setdefault(name, []).append(module)
    # `from pkg import a` records pkg and pkg.a: name the missing module, not its attributes
    missing = {n: m for n, m in missing.items() if n.rsplit(".", 1)[0] not in missing}
    assert not missing, f"imported by the image's code but not in its wheel: {missing}"


@pytest.mark.integration
def test_the_image_has_its_data_files(image_wheel: Path) -> None:
    """What the runtime reads beside its code is in the wheel (pyproject's package-data): every
    other file in its packages' folders, and the sample catalog (`shopsearch demo`,
    `shopsearch sample-catalog`) is made from the wheel alone, as from the repository."""
    with zipfile.ZipFile(image_wheel) as zf:
        names = set(zf.namelist())
    patterns = _dockerignore_patterns()
    tops = {m.split(".")[0] for m in _wheel_modules(image_wheel)}
    data = [
        rel
        for top in sorted(tops)
        for path in sorted((REPO / top).rglob("*"))
        if path.is_file() and path.suffix != ".py"
        and not _dockerignored(rel := path.relative_to(REPO).as_posix(), patterns)
    ]  # fmt: skip
    assert "catalog/sample.json" in data
    assert not [rel for rel in data if rel not in names], "package data missing from the wheel"
    probe = (
        "import sys, catalog.sample as s; assert s.__file__.startswith(sys.argv[1]), s.__file__; "
        "print(repr(s.generate_products(40, seed=2)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(image_wheel)], capture_output=True, text=True,
        timeout=120, cwd=image_wheel.parent, env={"PYTHONPATH": str(image_wheel), "PATH": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    from catalog.sample import generate_products

    assert result.stdout.strip() == repr(generate_products(40, seed=2))


def _requirement_names(requirements: list[str] | None, extras: set[str]) -> set[str]:
    from packaging.requirements import Requirement

    names = set()
    for text in requirements or []:
        req = Requirement(text)
        # a dependency declared for some supported Python (tomli below 3.11) is declared
        env = [
            {"extra": e, "python_version": v, "python_full_version": f"{v}.0"}
            for e in extras | {""}
            for v in ("3.10", "3.11", "3.12", "3.13")
        ]
        if req.marker is None or any(req.marker.evaluate(e) for e in env):
            names.add(re.sub(r"[-_.]+", "-", req.name).lower())
    return names


@pytest.mark.integration
def test_every_third_party_import_of_the_runtime_is_declared(image_wheel: Path) -> None:
    """Each third-party import is installed by the runtime dependencies (or a non-dev extra)."""
    from importlib.metadata import PackageNotFoundError, distribution, packages_distributions

    with zipfile.ZipFile(image_wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(zf.read(meta))
    extras = set(metadata.get_all("Provides-Extra") or []) - {"dev"}
    wanted = _requirement_names(metadata.get_all("Requires-Dist"), extras)
    closure: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name in closure:
            continue
        closure.add(name)
        with contextlib.suppress(PackageNotFoundError):  # not installed here: no closure
            wanted |= _requirement_names(distribution(name).requires, set()) - closure
    providers = {
        top: {re.sub(r"[-_.]+", "-", d).lower() for d in dists}
        for top, dists in packages_distributions().items()
    }
    modules = _wheel_modules(image_wheel)
    ours = {m.split(".")[0] for m in modules} | _first_party_names()
    undeclared: dict[str, list[str]] = {}
    for module, source in modules.items():
        for name in _imports(module, source, False):
            top = name.split(".")[0]
            if not top or top in ours or top in sys.stdlib_module_names:
                continue
            # not installed here (a dependency of another Python only): its own name
            provided = providers.get(top) or {re.sub(r"[-_.]+", "-", top).lower()}
            if not provided & closure:
                undeclared.setdefault(top, []).append(module)
    assert not undeclared, f"imported by the image's code, not in its dependencies: {undeclared}"


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
    pkg_runs = [i for i, a in runs if re.search(r"pip install\b.*(\s\.(\s|$)|\.whl)", a)]
    assert torch_runs, "torch must be installed with --index-url $TORCH_INDEX_URL"
    assert pkg_runs, "the Dockerfile must install the package (`pip install .` or its wheel)"
    assert min(torch_runs) < min(pkg_runs), "torch must be installed before the package"
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


@pytest.mark.integration
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
