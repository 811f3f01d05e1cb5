"""The image the Dockerfile describes, rebuilt without a Docker engine and started.

No Docker engine runs where these tests run, so the test replays the Dockerfile: the build
stage's COPY and RUN steps (a venv and a non-editable ``pip install``, which proves the package
data ships), then the final stage's ENV, WORKDIR, CMD and HEALTHCHECK against a real process.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.conftest import Simulator
from tests.e2e.processes import ACCOUNT_SID, AUTH_TOKEN, free_port, stop

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "container-api-key-" + "c" * 16
PIP_TIMEOUT = 240


# --- the Dockerfile, parsed -----------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"the stage FROM {self.base} has no {keyword}"
        return found[-1]


def logical_lines(text: str) -> Iterator[str]:
    """Dockerfile lines with continuations joined and comments dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, arguments = line.partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "FROM":
            words = arguments.split()
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{keyword} before any FROM"
            stages[-1].instructions.append((keyword, arguments))
    return stages


def env_assignments(arguments: str) -> list[tuple[str, str]]:
    words = shlex.split(arguments)
    if "=" not in words[0]:  # the legacy form: ENV NAME value with spaces
        return [(words[0], " ".join(words[1:]))]
    return [tuple(word.split("=", 1)) for word in words]  # type: ignore[misc]


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda m: env.get(m.group(1) or m.group(2), ""), value)


def healthcheck(arguments: str) -> tuple[list[str], float]:
    """The HEALTHCHECK's exec-form command and its ``--timeout`` in seconds."""
    options, separator, command = arguments.partition("CMD ")
    assert separator, f"HEALTHCHECK without CMD: {arguments}"
    timeout = re.search(r"--timeout=(\d+)s", options)
    argv = json.loads(command)
    assert isinstance(argv, list), "HEALTHCHECK CMD must use the exec (JSON) form"
    return argv, float(timeout.group(1)) if timeout else 30.0


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def final_env(final: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for arguments in final.all("ENV"):
        for name, value in env_assignments(arguments):
            env[name] = value
    return env


def test_final_stage_is_a_slim_python_311(final: Stage) -> None:
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", final.base), final.base


def test_final_stage_runs_as_a_non_root_user_it_creates(final: Stage) -> None:
    user = final.last("USER").split(":")[0]

    assert user not in {"root", "0"}
    created = " ".join(final.all("RUN"))
    assert re.search(rf"useradd\b.*(--uid {user}\b|\s{user}$)", created), created


def test_cmd_is_escalator_serve(final: Stage) -> None:
    assert json.loads(final.last("CMD")) == ["escalator", "serve"]


def test_healthcheck_probes_healthz_on_the_configured_port(final: Stage) -> None:
    argv, timeout = healthcheck(final.last("HEALTHCHECK"))

    assert "/healthz" in " ".join(argv)
    assert "ESCALATOR_PORT" in " ".join(argv)
    assert 0 < timeout <= 10


def test_image_listens_on_all_interfaces_on_the_exposed_port(
    final: Stage, final_env: dict[str, str]
) -> None:
    # API.md: ESCALATOR_HOST is 0.0.0.0 in the image, or nothing outside the container connects.
    assert final_env["ESCALATOR_HOST"] == "0.0.0.0"
    assert final.last("EXPOSE").split("/")[0] == final_env["ESCALATOR_PORT"]


def test_logs_are_json_in_the_image(final_env: dict[str, str]) -> None:
    assert final_env["ESCALATOR_LOG_FORMAT"] == "json"


# --- the build stage, replayed --------------------------------------------------------------


def run(
    argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def build_stage(stages: list[Stage], final: Stage) -> tuple[Stage, str]:
    """The stage the final one copies its venv from, and that venv's path in the image."""
    copies = [shlex.split(arguments) for arguments in final.all("COPY")]
    from_build = [words for words in copies if words[0].startswith("--from=")]
    assert len(from_build) == 1, f"expected one COPY --from: {copies}"
    origin, source, destination = from_build[0]
    assert source == destination, "the venv must keep its path: its scripts' shebangs use it"
    (stage,) = [stage for stage in stages if stage.name == origin.removeprefix("--from=")]
    return stage, source


def copy_context(stage: Stage, workdir: Path) -> None:
    """The build stage's ``COPY`` steps, from the project root into ``workdir``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for arguments in stage.all("COPY"):
        *sources, destination = shlex.split(arguments)
        target = workdir / destination
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=ignore, dirs_exist_ok=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)


def replay_build(stage: Stage, image_venv: str, venv: Path, workdir: Path) -> None:
    """The build stage's ``RUN``: ``python -m venv`` then ``pip install`` into it."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ESCALATOR_", "TWILIO_", "VIRTUAL_ENV", "PYTHON"))
    }
    for arguments in stage.all("RUN"):
        for step in arguments.split("&&"):
            argv = shlex.split(step)
            if argv[:3] == ["python", "-m", "venv"] and argv[3:] == [image_venv]:
                command = [sys.executable, "-m", "venv", str(venv)]
            elif argv[:2] == [f"{image_venv}/bin/pip", "install"]:
                # Without --no-cache-dir: pip's cache is what keeps this test fast.
                options = [word for word in argv[2:] if word != "--no-cache-dir"]
                command = [str(venv / "bin" / "pip"), "install", "--quiet", *options]
            else:
                pytest.fail(f"this test does not know how to replay the build step {step!r}")
            result = run(command, cwd=workdir, env=env, timeout=PIP_TIMEOUT)
            assert result.returncode == 0, f"{step}: {result.stderr[-2000:]}"


@dataclass(frozen=True)
class Image:
    """The rebuilt image: its venv on this machine, and the final stage's settings."""

    venv: Path
    image_venv: str
    final: Stage

    def environment(self, workdir: Path) -> dict[str, str]:
        """The container's environment, for a container whose WORKDIR is ``workdir``."""
        # What the base image and the container runtime set before the Dockerfile's ENV lines;
        # os.defpath stands in for the base image's PATH.
        env = {"PATH": os.defpath, "HOME": str(workdir), "LANG": "C.UTF-8"}
        for arguments in self.final.all("ENV"):
            for name, value in env_assignments(arguments):
                env[name] = expand(value.replace(self.image_venv, str(self.venv)), env)
        return env

    def workdir(self, root: Path) -> Path:
        """A stand-in for the final stage's WORKDIR under ``root``."""
        path = root / self.final.last("WORKDIR").lstrip("/")
        path.mkdir(parents=True, exist_ok=True)
        return path


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, stages: list[Stage], final: Stage) -> Image:
    """The build stage replayed once for this module (pip's cache makes it a few seconds)."""
    root = tmp_path_factory.mktemp("image")
    stage, image_venv = build_stage(stages, final)
    context = root / "build" / stage.last("WORKDIR").lstrip("/")
    context.mkdir(parents=True)
    copy_context(stage, context)
    venv = root / "final" / image_venv.lstrip("/")
    replay_build(stage, image_venv, venv, context)
    return Image(venv=venv, image_venv=image_venv, final=final)


# --- the final stage, started ---------------------------------------------------------------


def status_of(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError):
        return None


@pytest.mark.timeout(300)
def test_image_path_runs_the_installed_copy_not_the_source_tree(
    image: Image, tmp_path: Path
) -> None:
    workdir = image.workdir(tmp_path)
    env = image.environment(workdir)

    for command in ("escalator", "python"):
        found = shutil.which(command, path=env["PATH"])
        assert found is not None, command
        assert Path(found).parent == image.venv / "bin", found
    where = run(
        ["python", "-c", "import escalator; print(escalator.__file__)"],
        cwd=workdir,
        env=env,
        timeout=30,
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(image.venv), where.stdout


@pytest.mark.timeout(300)
def test_image_ships_the_routing_file_and_the_migrations(image: Image, tmp_path: Path) -> None:
    workdir = image.workdir(tmp_path)
    env = image.environment(workdir)

    checked = run(["escalator", "check"], cwd=workdir, env=env, timeout=60)
    migrated = run(["escalator", "migrate"], cwd=workdir, env=env, timeout=60)

    assert checked.returncode == 0, checked.stderr[-2000:]
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    # The default sqlite:///escalator.db lands in WORKDIR, the non-root user's writable home.
    assert (workdir / "escalator.db").is_file()


@pytest.mark.timeout(300)
def test_image_cmd_passes_its_healthcheck_and_stops_on_sigterm(
    image: Image, tmp_path: Path, simulator: Simulator
) -> None:
    workdir = image.workdir(tmp_path)
    port = free_port()
    env = image.environment(workdir) | {
        # The image listens on 0.0.0.0 inside its own network namespace; here that would expose
        # the service on every interface of the test machine, so loopback and a free port.
        "ESCALATOR_HOST": "127.0.0.1",
        "ESCALATOR_PORT": str(port),
        "ESCALATOR_API_KEYS": API_KEY,
        "ESCALATOR_WORKSPACE_SID": simulator.workspace_sid,
        "ESCALATOR_WORKFLOW_SID": simulator.workflow_sid,
        "ESCALATOR_TASKROUTER_URL": simulator.url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    }
    probe, probe_timeout = healthcheck(image.final.last("HEALTHCHECK"))
    stderr = tmp_path / "serve.stderr"
    with stderr.open("wb") as log:
        serve = subprocess.Popen(
            json.loads(image.final.last("CMD")), cwd=workdir, env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 20
        while status_of(f"http://127.0.0.1:{port}/healthz") != 200:
            assert serve.poll() is None, stderr.read_text(encoding="utf-8")[-2000:]
            assert time.monotonic() < deadline, "serve did not answer /healthz within 20 s"
            time.sleep(0.05)
        assert status_of(f"http://127.0.0.1:{port}/readyz") == 200

        healthy = run(probe, cwd=workdir, env=env, timeout=probe_timeout)
        assert healthy.returncode == 0, healthy.stderr

        assert stop(serve) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()

    lines = stderr.read_text(encoding="utf-8").splitlines()
    assert lines, "serve logged nothing"
    for line in lines:
        json.loads(line)  # ESCALATOR_LOG_FORMAT=json: one JSON object a line
    # The same probe fails once the service is gone: it can tell a dead container.
    unhealthy = run(probe, cwd=workdir, env=env, timeout=probe_timeout)
    assert unhealthy.returncode != 0
