"""The container files agree with the code: every AGENTRAG_* variable docker-compose.yml sets is
a real setting and the wiring validates; the Langfuse beside agentrag is wired to its own
datastores and to agentrag with the same project keys, and agentrag starts without it; every
variable compose reads has a default or is in .env.example; the Dockerfile copies every package,
installs extras that exist, and starts a CLI command that parses. No Docker engine is needed."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml

from agent.settings import ENV_PREFIX, LANGFUSE_VARIABLES, Settings
from agent.tracing import Tracing
from cli.main import app as cli_app
from server.app import create_app

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
# Values for variables the compose file requires from .env (`${NAME:?message}`).
REQUIRED_SAMPLES = {"AGENTRAG_LLM_BASE_URL": "http://llm.example:8080/v1"}
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either of compose's two spellings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def interpolate(value: str) -> str:
    """What compose substitutes with an empty shell environment and the sample .env."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        if name in REQUIRED_SAMPLES:
            return REQUIRED_SAMPLES[name]
        assert "?" not in op, f"${{{name}}} is required but the test has no sample value for it"
        return arg

    return INTERPOLATION.sub(substitute, value)


def setting_name(variable: str) -> str:
    """AGENTRAG_QDRANT_URL -> qdrant_url; nested AGENTRAG_COLLECTIONS__X__Y -> collections."""
    return variable.removeprefix(ENV_PREFIX).split("__", 1)[0].lower()


def test_compose_sets_only_real_settings(compose: dict[str, Any]) -> None:
    names = {m["name"] for m in INTERPOLATION.finditer(COMPOSE.read_text())}
    for service in compose["services"].values():
        names |= set(environment(service))
    agentrag_names = sorted(n for n in names if n.startswith(ENV_PREFIX))
    assert "AGENTRAG_POSTGRES_URL" in agentrag_names and "AGENTRAG_QDRANT_URL" in agentrag_names
    unknown = [n for n in agentrag_names if setting_name(n) not in Settings.model_fields]
    assert unknown == [], f"not agentrag settings: {unknown}"


def test_compose_wiring_validates_and_points_at_its_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = {k: interpolate(v) for k, v in environment(services["agentrag"]).items()}
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        **{setting_name(k): v for k, v in env.items() if k.startswith(ENV_PREFIX)},
    )
    assert settings.vector_store == "server"

    qdrant = urlsplit(settings.qdrant_url or "")
    assert qdrant.hostname in services and "qdrant/qdrant" in services[qdrant.hostname]["image"]

    postgres = urlsplit(settings.postgres_url or "")
    assert postgres.hostname in services
    database = services[postgres.hostname]
    assert database["image"].startswith("postgres:")
    db_env = {k: interpolate(v) for k, v in environment(database).items()}
    assert postgres.username == db_env["POSTGRES_USER"]
    assert postgres.password == db_env["POSTGRES_PASSWORD"]
    assert postgres.path.lstrip("/") == db_env["POSTGRES_DB"]

    depends = services["agentrag"]["depends_on"]
    assert {qdrant.hostname, postgres.hostname} <= set(depends)
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source in (compose.get("volumes") or {}), f"{name}: undeclared volume {source}"


def test_healthcheck_probes_readiness(compose: dict[str, Any]) -> None:
    assert create_app().url_path_for("readyz") == "/readyz"
    test = compose["services"]["agentrag"]["healthcheck"]["test"]
    assert "/readyz" in " ".join(test)
    assert "/readyz" in DOCKERFILE.read_text().split("HEALTHCHECK", 1)[1].split("\n\n")[0]
    postgres_check = " ".join(compose["services"]["postgres"]["healthcheck"]["test"])
    assert "pg_isready" in postgres_check
    assert compose["services"]["agentrag"]["depends_on"]["postgres"]["condition"] == (
        "service_healthy"
    )


def service_with_image(services: dict[str, Any], image: str) -> str:
    """The one service running `image` (a name with its tag, or a name ending in `:`)."""
    names = [
        name
        for name, service in services.items()
        if service.get("image", "") == image
        or (image.endswith(":") and service.get("image", "").startswith(image))
    ]
    assert len(names) == 1, f"one service runs {image}, not {names}"
    return names[0]


def published(service: dict[str, Any]) -> dict[int, int]:
    """Container port -> host port, from short-syntax `ports` (`[IP:]HOST:CONTAINER`)."""
    pairs = [str(port).split(":")[-2:] for port in service.get("ports", [])]
    return {int(container): int(host) for host, container in pairs}


def dependencies(services: dict[str, Any], name: str) -> set[str]:
    """Every service `name` waits for, directly or through another."""
    found: set[str] = set()
    todo = [name]
    while todo:
        for dependency in services[todo.pop()].get("depends_on") or {}:
            if dependency not in found:
                found.add(dependency)
                todo.append(dependency)
    return found


def langfuse_services(services: dict[str, Any]) -> tuple[str, str]:
    return (
        service_with_image(services, "langfuse/langfuse:3"),
        service_with_image(services, "langfuse/langfuse-worker:3"),
    )


def test_langfuse_is_wired_to_its_own_datastores(compose: dict[str, Any]) -> None:
    services = compose["services"]
    web, worker = langfuse_services(services)
    env = {k: interpolate(v) for k, v in environment(services[web]).items()}
    worker_env = {k: interpolate(v) for k, v in environment(services[worker]).items()}
    mismatched = [k for k, v in worker_env.items() if env.get(k) != v]
    assert mismatched == [], f"web and worker disagree on {mismatched}"
    assert re.fullmatch(r"[0-9a-f]{64}", env["ENCRYPTION_KEY"]), "ENCRYPTION_KEY: 64 hex digits"
    assert env["NEXTAUTH_SECRET"] and env["SALT"]

    database = urlsplit(env["DATABASE_URL"])
    postgres = services[database.hostname or ""]
    assert postgres["image"].startswith("postgres:")
    db_env = {k: interpolate(v) for k, v in environment(postgres).items()}
    assert database.username == db_env["POSTGRES_USER"]
    assert database.password == db_env["POSTGRES_PASSWORD"]
    assert database.path.lstrip("/") == db_env["POSTGRES_DB"]

    clickhouse = urlsplit(env["CLICKHOUSE_URL"]).hostname or ""
    assert urlsplit(env["CLICKHOUSE_MIGRATION_URL"]).hostname == clickhouse
    assert services[clickhouse]["image"].startswith("clickhouse/clickhouse-server")
    clickhouse_env = {k: interpolate(v) for k, v in environment(services[clickhouse]).items()}
    assert env["CLICKHOUSE_USER"] == clickhouse_env["CLICKHOUSE_USER"]
    assert env["CLICKHOUSE_PASSWORD"] == clickhouse_env["CLICKHOUSE_PASSWORD"]

    redis = services[env["REDIS_HOST"]]
    assert redis["image"].startswith(("redis:", "valkey/valkey:"))
    assert f"--requirepass {env['REDIS_AUTH']}" in interpolate(redis["command"])

    minio_name = urlsplit(env["LANGFUSE_S3_EVENT_UPLOAD_ENDPOINT"]).hostname or ""
    minio = services[minio_name]
    assert "minio" in minio["image"]
    minio_env = {k: interpolate(v) for k, v in environment(minio).items()}
    for kind in ("EVENT", "MEDIA"):
        prefix = f"LANGFUSE_S3_{kind}_UPLOAD_"
        assert env[prefix + "ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"]
        assert env[prefix + "SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]
        assert f"mkdir -p /data/{env[prefix + 'BUCKET']} " in minio["command"], "bucket made"
    # presigned media URLs point at a port this host publishes
    media_port = urlsplit(env["LANGFUSE_S3_MEDIA_UPLOAD_ENDPOINT"]).port
    assert media_port in published(minio).values()

    datastores = {database.hostname, clickhouse, env["REDIS_HOST"], minio_name}
    for name in (web, worker):
        depends = services[name]["depends_on"]
        assert set(depends) == datastores, name
        assert {d["condition"] for d in depends.values()} == {"service_healthy"}
    for datastore in datastores:
        assert services[datastore]["healthcheck"]["test"], f"{datastore} has no healthcheck"


def test_agentrag_traces_to_the_langfuse_beside_it(compose: dict[str, Any]) -> None:
    services = compose["services"]
    web, _ = langfuse_services(services)
    env = {k: interpolate(v) for k, v in environment(services["agentrag"]).items()}
    langfuse = {k: interpolate(v) for k, v in environment(services[web]).items()}

    base = urlsplit(env["LANGFUSE_BASE_URL"])
    assert base.hostname == web and base.port in published(services[web])
    assert env["LANGFUSE_PUBLIC_KEY"] == langfuse["LANGFUSE_INIT_PROJECT_PUBLIC_KEY"]
    assert env["LANGFUSE_SECRET_KEY"] == langfuse["LANGFUSE_INIT_PROJECT_SECRET_KEY"]
    assert env["AGENTRAG_LANGFUSE_PROJECT_ID"] == langfuse["LANGFUSE_INIT_PROJECT_ID"]
    ui = env["AGENTRAG_LANGFUSE_UI_URL"]
    assert ui == langfuse["NEXTAUTH_URL"]
    assert urlsplit(ui).port in published(services[web]).values()
    # .env can still turn tracing off
    assert "LANGFUSE_TRACING_ENABLED" not in env

    values: dict[str, Any] = {k: v for k, v in env.items() if k in LANGFUSE_VARIABLES}
    values |= {setting_name(k): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    tracing = Tracing(Settings(_env_file=None, **values))  # type: ignore[call-arg]
    assert tracing.enabled
    project = langfuse["LANGFUSE_INIT_PROJECT_ID"]
    assert tracing.url("t1") == f"{ui}/project/{project}/traces/t1"


def test_agentrag_starts_without_langfuse(compose: dict[str, Any]) -> None:
    services = compose["services"]
    langfuse_side = set(langfuse_services(services))
    for name in set(langfuse_side):
        langfuse_side |= dependencies(services, name)
    # `docker compose up agentrag` starts none of Langfuse, nor waits on it
    assert dependencies(services, "agentrag") & langfuse_side == set()


def env_example() -> dict[str, str]:
    """NAME -> value of each line of .env.example, commented out or not."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    found = (re.fullmatch(r"#?\s*([A-Z_][A-Z0-9_]*)=(.*)", line.strip()) for line in lines)
    return {m[1]: m[2].strip() for m in found if m}


def test_every_compose_variable_has_a_default_or_is_in_env_example() -> None:
    example = env_example()
    defaults: dict[str, set[str]] = {}
    for match in INTERPOLATION.finditer(COMPOSE.read_text()):
        name, op = match["name"], match["op"] or ""
        if "-" in op:
            defaults.setdefault(name, set()).add(match["arg"] or "")
        else:
            assert name in example, f"${{{name}}} has no default and is not in .env.example"
    # one dev default per variable, the one .env.example shows
    for name, values in defaults.items():
        assert len(values) == 1, f"{name} has different defaults: {sorted(values)}"
        if name in example:
            assert example[name] == next(iter(values)), f".env.example shows another {name}"
    assert set(REQUIRED_SAMPLES) <= set(example)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def test_dockerfile_cmd_is_a_cli_command_that_parses(pyproject: dict[str, Any]) -> None:
    cmds = [json.loads(args) for keyword, args in dockerfile_instructions() if keyword == "CMD"]
    assert len(cmds) == 1, "one exec-form CMD"
    program, *args = cmds[0]
    assert pyproject["project"]["scripts"][program] == "cli.main:app"
    group: Any = typer.main.get_command(cli_app)
    command = group.get_command(group.make_context(program, [], resilient_parsing=True), args[0])
    assert command is not None, f"agentrag has no command {args[0]!r}"
    params = command.make_context(args[0], list(args[1:])).params
    assert params["host"] == "0.0.0.0" and params["port"] == 8000


def test_dockerfile_installs_the_package_and_every_source_folder(
    pyproject: dict[str, Any],
) -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert "torch==2.13.0" in runs and "download.pytorch.org/whl/cpu" in runs
    extras = re.findall(r'pip install "?\.\[([a-z,]+)\]', runs)
    assert extras, "the package itself is installed"
    for extra in extras[0].split(","):
        assert extra in pyproject["project"]["optional-dependencies"]

    copied = {
        src for keyword, args in instructions if keyword == "COPY" for src in args.split()[:-1]
    }
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = {p.rstrip("*") for p in packages if p != "tests*"}
    assert needed <= copied, f"packages missing from the image: {sorted(needed - copied)}"
    assert {"pyproject.toml", "README.md"} <= copied
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for path in needed | {"pyproject.toml", "README.md"}:
        assert f"!{path}/" in ignored or f"!{path}" in ignored, f".dockerignore hides {path}"
    assert "*" in ignored, ".dockerignore keeps local state and .env out of the build context"


def test_the_model_server_image_runs_serve_models_on_cuda(pyproject: dict[str, Any]) -> None:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile.models").read_text())
    cmds = [json.loads(line[4:]) for line in text.splitlines() if line.startswith("CMD ")]
    assert len(cmds) == 1
    program, name, *args = cmds[0]
    assert pyproject["project"]["scripts"][program] == "cli.main:app"
    group: Any = typer.main.get_command(cli_app)
    command = group.get_command(group.make_context(program, [], resilient_parsing=True), name)
    assert command is not None, f"agentrag has no command {name!r}"
    params = command.make_context(name, list(args)).params
    assert params["device"] == "cuda" and params["port"] == 8080
    assert "download.pytorch.org/whl/cu" in text and 'pip install ".[models]"' in text
    compose = yaml.safe_load(COMPOSE.read_text())
    models = compose["services"]["models"]
    assert models["build"]["dockerfile"] == "Dockerfile.models"
    assert models["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
