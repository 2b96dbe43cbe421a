"""The container files agree with the code: every AGENTRAG_* variable docker-compose.yml sets is
a real setting and the wiring validates; the Dockerfile copies every package, installs extras
that exist, and starts a CLI command that parses. No Docker engine is needed."""

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

from agent.settings import ENV_PREFIX, Settings
from cli.main import app as cli_app
from server.app import create_app

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
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
