"""The deployment files, checked offline: they parse and pass their schemas, every process they
start is a real `cw` or `celery` entry point, every variable they use is documented, Redis and
Flower always ask for a password, state is on volumes, and no file holds a real secret."""

from __future__ import annotations

import configparser
import importlib
import json
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import fields
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml
from celery import Celery
from celery.bin.celery import celery as celery_cli
from click.testing import CliRunner
from flower.options import options as flower_options

from cw.cli import cli
from cw.settings import Settings
from cw.store import Store
from tests.conftest import database_env
from tests.fakes.fake_claude_script import FAKE_CLAUDE
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
KUBE = DEPLOY / "kubernetes"
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY_README = DEPLOY / "README.md"

IMAGE = "codewalk-district"
CELERY_APPS = ("workers", "beat")
UNITS = sorted(SYSTEMD.glob("*.service"))
MANIFESTS = sorted(KUBE.glob("*.yaml"))
NOT_APPLIED = {"kustomization.yaml", "secret.example.yaml"}  # kustomize input; made by hand
KUBERNETES_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
SECRET_WORDS = re.compile(r"PASSWORD|API_KEY|SECRET|TOKEN|BASIC_AUTH", re.IGNORECASE)
SETTING_NAMES = {f"CW_{f.name.upper()}" for f in fields(Settings)}
SETTING_DEFAULTS = {f"CW_{f.name.upper()}": f.default for f in fields(Settings)}


# -- entry points ------------------------------------------------------------------------------


def check_entry_point(argv: list[str]) -> None:
    """``argv`` runs `cw <command>` or `celery -A workers|beat <command>`, maybe under tini."""
    if argv[:2] == ["/usr/bin/tini", "--"]:
        argv = argv[2:]
    program, *words = argv
    if Path(program).name == "cw":
        check_cw(words)
    elif Path(program).name == "celery":
        check_celery(words)
    else:
        raise AssertionError(f"{argv} runs neither cw nor celery")


def check_cw(words: list[str]) -> None:
    """The words name a command in cw's click table (nested groups too), with its options."""
    ctx = click.Context(cli)
    command: click.Command = cli
    path = ["cw"]
    rest = list(words)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        path.append(rest.pop(0))
        found = command.get_command(ctx, path[-1])
        assert found is not None, f"`{' '.join(path)}` is not a cw command"
        command = found
    assert len(path) > 1, f"cw {words}: no command"
    opts = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    check_options(" ".join(path), rest, opts)


def check_celery(words: list[str]) -> None:
    """`-A workers|beat`, an app that is Celery's, and a Celery command with its options."""
    assert words[0] == "-A" and words[1] in CELERY_APPS, f"celery {words}: not cw's app"
    assert isinstance(importlib.import_module(words[1]).app, Celery)
    name, *rest = words[2:]
    command = celery_cli.commands.get(name)
    assert command is not None, f"`celery {name}` is not a Celery command"
    if name == "flower":  # Flower's own (tornado) options
        opts = {f"--{option}" for option in flower_options._options}
    else:
        opts = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    check_options(f"celery {name}", rest, opts)


def check_options(where: str, words: list[str], known: set[str]) -> None:
    for word in words:
        if word.startswith("-"):
            assert word.partition("=")[0] in known, f"{where}: no option {word}"


@pytest.mark.parametrize(
    "argv",
    [
        ["cw", "wrker"],
        ["cw", "worker", "--merg"],
        ["cw", "server", "begin"],
        ["cw"],
        ["celery", "-A", "cw", "worker"],
        ["celery", "-A", "workers", "flower", "--basic_auth_typo=x"],
        ["/usr/bin/tini", "--", "python", "-m", "http.server"],
    ],
)
def test_the_entry_point_check_rejects_what_does_not_exist(argv: list[str]) -> None:
    with pytest.raises(AssertionError):
        check_entry_point(argv)


def dockerfile_instruction(name: str) -> list[str]:
    """The exec-form value of ENTRYPOINT or CMD."""
    match = re.search(rf"^{name} (\[.*\])$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, f"Dockerfile has no exec-form {name}"
    value: list[str] = json.loads(match.group(1))
    return value


def test_the_image_runs_cw_as_a_non_root_user_on_python_3_11() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert dockerfile_instruction("ENTRYPOINT") == ["/usr/bin/tini", "--", "cw"]
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert "ARG INSTALL_CLAUDE_CODE=" in text
    assert 'npm install -g "@anthropic-ai/claude-code@' in text
    assert re.search(r"^RUN pip install \"/src", text, re.MULTILINE)


def test_the_build_context_holds_everything_the_dockerfile_copies() -> None:
    patterns = [
        line for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]  # fmt: skip
    assert patterns[0] == "*", "the context is an allow-list"
    copied = re.findall(r"^COPY (.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
    for source in (s for line in copied for s in line.split()):
        assert (ROOT / source).exists(), source
        assert f"!{source.rstrip('/')}" in {p.rstrip("/") for p in patterns}, source


# -- docker-compose.yml ------------------------------------------------------------------------

VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def cw_services() -> dict[str, dict[str, Any]]:
    """The services that run the cw image (built from ./Dockerfile)."""
    return {name: s for name, s in compose()["services"].items() if "build" in s}


def service_argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: a compose entrypoint resets the image's CMD, as in Docker."""
    if "entrypoint" in service:
        return [*service["entrypoint"], *service.get("command", [])]
    command = service.get("command", dockerfile_instruction("CMD"))
    return [*dockerfile_instruction("ENTRYPOINT"), *command]


def env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines, as Compose and systemd read them (no quotes used here)."""
    pairs = (
        line.split("=", 1) for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )  # fmt: skip
    return {key.strip(): value for key, value in pairs}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}``."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        value = env.get(name)
        if value is not None and (value or not (op or "").startswith(":")):
            return value
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op else ""

    return VARIABLE.sub(one, text)


def filled_env() -> dict[str, str]:
    """.env.example with its empty secrets filled in, as a person would."""
    env = env_file(ENV_EXAMPLE)
    filled = {
        "FLOWER_BASIC_AUTH": "admin:pw",
        "CW_DATABASE_URL": "postgresql+psycopg://cw:pw@postgres:5432/cw",  # its comment's form
    }
    return {k: v or filled.get(k, "pw") for k, v in env.items()}


def test_compose_file_passes_the_compose_specification() -> None:
    vendor = files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendor.joinpath("compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert [e.message for e in validator.iter_errors(compose())] == []
    broken = {**compose(), "services": {"worker": {"stop_grace_period": ["2m"]}}}
    assert list(validator.iter_errors(broken)), "the schema check must be able to fail"


@pytest.mark.parametrize("name", sorted(cw_services()))
def test_every_compose_service_runs_a_real_entry_point(name: str) -> None:
    check_entry_point(service_argv(cw_services()[name]))


def test_compose_runs_every_part_of_the_district() -> None:
    words = [" ".join(service_argv(s)) for s in cw_services().values()]
    for part in ("cw init", "cw worker", "cw worker --merge", "cw beat", "cw fsui", " flower "):
        assert any(part in f"{w} " for w in words), part


def test_agent_workers_scale() -> None:
    worker = compose()["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert service_argv(worker)[-1] == "worker"


def test_every_compose_variable_is_documented_in_the_env_example() -> None:
    used = {m.group(1) for m in VARIABLE.finditer(COMPOSE.read_text())}
    documented = set(env_file(ENV_EXAMPLE))
    assert used - documented == set(), "used in docker-compose.yml, missing in .env.example"
    assert documented - used == set(), "in .env.example, used nowhere"


def test_every_env_example_block_says_what_its_variables_are() -> None:
    for block in ENV_EXAMPLE.read_text().split("\n\n"):
        lines = block.strip().splitlines()
        if any("=" in line and not line.startswith("#") for line in lines):
            assert lines[0].startswith("#"), f"no comment above {lines[0]}"


def test_missing_secrets_stop_compose_with_a_message() -> None:
    env = env_file(ENV_EXAMPLE)  # as copied: secrets empty
    with pytest.raises(KeyError, match="REDIS_PASSWORD"):
        interpolate(COMPOSE.read_text(), env)
    with pytest.raises(KeyError, match="FLOWER_BASIC_AUTH"):
        interpolate(COMPOSE.read_text(), {**env, "REDIS_PASSWORD": "pw"})


def test_compose_settings_are_valid_cw_settings(tmp_path: Path) -> None:
    data = yaml.safe_load(interpolate(COMPOSE.read_text(), filled_env()))
    for name, service in data["services"].items():
        if "build" not in service:
            continue
        env = {k: str(v) for k, v in service["environment"].items()}
        check_settings(env, f"docker-compose.yml {name}", tmp_path)


def check_settings(env: dict[str, str], where: str, repo: Path) -> None:
    """Known CW_* names, values cw accepts, and no empty value hiding a default."""
    for key, value in env.items():
        if key.startswith("CW_"):
            assert key in SETTING_NAMES, f"{where}: {key} is not a cw setting"
            assert value or SETTING_DEFAULTS[key] == "", f"{where}: empty {key} hides its default"
    Settings.load(env={**env, "CW_REPO": str(repo)})


def compose_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Mount path -> named volume."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def test_compose_volumes_hold_the_repository_its_state_and_the_databases() -> None:
    data = compose()
    repo = "/srv/cw/repo"  # CW_REPO: the clone, with .cw/ (and the SQLite database) inside
    for name, service in cw_services().items():
        assert service["environment"]["CW_REPO"] == repo, name
        if name != "flower":
            assert compose_mounts(service).get(repo) == "repo", name
    hub = env_file(ENV_EXAMPLE)["CW_GIT_HUB"]
    for name in ("init", "worker", "merge-worker"):
        assert hub in compose_mounts(data["services"][name]), name
    assert "/home/cw/.claude" in compose_mounts(data["services"]["worker"])
    assert compose_mounts(data["services"]["redis"]) == {"/data": "redis-data"}
    postgres = compose_mounts(data["services"]["postgres"])
    assert postgres == {"/var/lib/postgresql/data": "postgres-data"}
    declared = set(data["volumes"])
    for service in data["services"].values():
        assert set(compose_mounts(service).values()) <= declared


def test_compose_redis_requires_its_password_everywhere() -> None:
    services = compose()["services"]
    command = services["redis"]["command"]
    password = command[command.index("--requirepass") + 1]
    assert password.startswith("${REDIS_PASSWORD:?")
    assert "--appendonly" in command
    for name, service in cw_services().items():
        url = service["environment"]["CW_BROKER_URL"]  # none may fall back to its own Redis
        assert url.startswith("redis://:${REDIS_PASSWORD:?"), name


def test_compose_flower_asks_for_a_password_kept_off_the_command_line() -> None:
    flower = compose()["services"]["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert not any("basic" in word for word in service_argv(flower))


def test_only_agent_workers_get_the_api_key() -> None:
    holders = {n for n, s in compose()["services"].items() if "ANTHROPIC_API_KEY" in str(s)}
    assert holders == {"worker"}


# -- systemd -----------------------------------------------------------------------------------


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def unit_values(path: Path, key: str) -> list[str]:
    """Every value of a key that may repeat (Environment=, EnvironmentFile=)."""
    return [
        line.split("=", 1)[1] for line in path.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]  # fmt: skip


def unit_env(path: Path) -> dict[str, str]:
    """Environment= defaults, then the example of each EnvironmentFile= (which win)."""
    env: dict[str, str] = {}
    for assignments in unit_values(path, "Environment"):
        env.update(word.split("=", 1) for word in shlex.split(assignments))
    for name in unit_values(path, "EnvironmentFile"):
        env.update(env_file(SYSTEMD / f"{Path(name.lstrip('-')).name}.example"))
    return env


def exec_start(path: Path, instance: str = "1") -> list[str]:
    """ExecStart= as systemd runs it: specifiers and ${VAR} replaced, then split into words."""
    line = read_unit(path)["Service"]["ExecStart"]
    line = line.replace("%%", "\0").replace("%i", instance)
    assert "%" not in line, f"{path.name}: a systemd specifier other than %i: {line}"
    env = unit_env(path)
    line = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line).replace("\0", "%")
    return shlex.split(line)


def test_there_is_a_unit_for_every_process() -> None:
    names = {path.name for path in UNITS}
    expected = {"cw-worker@.service", "cw-merge.service", "cw-beat.service"}
    assert expected | {"cw-flower.service", "cw-server.service", "cw-fsui.service"} <= names


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_every_unit_runs_a_real_entry_point_and_stops_gently(path: Path) -> None:
    unit = read_unit(path)
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    check_entry_point(exec_start(path))
    service = unit["Service"]
    assert service["User"] == "cw"
    assert service["KillMode"] == "mixed"
    assert service["Restart"] in ("always", "on-failure")
    assert int(service["TimeoutStopSec"]) >= 30
    assert "/etc/cw/cw.env" in unit_values(path, "EnvironmentFile")


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_every_unit_variable_is_documented(path: Path, tmp_path: Path) -> None:
    for name in unit_values(path, "EnvironmentFile"):
        assert name.startswith("/etc/cw/"), name
        assert (SYSTEMD / f"{Path(name).name}.example").is_file(), name
    check_settings(unit_env(path), path.name, tmp_path)  # also: every ${VAR} is set
    exec_start(path)


def test_only_units_that_run_agents_read_the_api_key() -> None:
    assert "ANTHROPIC_API_KEY" not in env_file(SYSTEMD / "cw.env.example")
    readers = {p.name for p in UNITS if "ANTHROPIC_API_KEY" in unit_env(p)}
    assert readers == {"cw-worker@.service", "cw-server.service"}


def test_agents_get_time_to_commit_their_work_when_a_worker_stops() -> None:
    stop = float(read_unit(SYSTEMD / "cw-worker@.service")["Service"]["TimeoutStopSec"])
    defaults = Settings(repo=Path("/"))
    assert stop >= defaults.heartbeat + defaults.agent_kill_grace + 60


@pytest.fixture
def district(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cw_database: str) -> Path:
    """An initialised district directory as `cw` sees it, with an external broker."""
    (tmp_path / ".cw").mkdir()
    if not database_env(cw_database):  # SQLite: cw's own file, as `cw init` leaves it
        Store.open(f"sqlite:///{tmp_path / '.cw' / 'cw.db'}").close()
    monkeypatch.setenv("CW_REPO", str(tmp_path))
    monkeypatch.setenv("CW_BROKER_URL", "redis://:pw@127.0.0.1:1/0")
    monkeypatch.chdir(tmp_path)  # `cw flower` changes directory; this puts it back
    return tmp_path


def exec_of(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The program and environment a `cw` command execs, without running it."""
    seen: dict[str, Any] = {}

    def fake_exec(_file: str, argv: list[str], env: dict[str, str]) -> None:
        seen.update(argv=argv, env=env)

    monkeypatch.setattr(os, "execvpe", fake_exec)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return seen["argv"], seen["env"]


def test_the_templated_unit_runs_cw_worker_named_after_its_instance(
    district: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    words = exec_start(SYSTEMD / "cw-worker@.service", instance="7")[1:]
    assert words == ["worker", "-n", "cw-agents-7@%h"]
    concurrency = unit_env(SYSTEMD / "cw-worker@.service")["CW_CONCURRENCY"]
    monkeypatch.setenv("CW_CONCURRENCY", concurrency)
    monkeypatch.setenv("CW_AGENT", "claude")  # as cw.env.example says: `cw worker` checks it
    monkeypatch.setenv("CW_CLAUDE_BINARY", str(FAKE_CLAUDE))  # installed, as it must be
    named, _env = exec_of(monkeypatch, words)
    plain, _env = exec_of(monkeypatch, ["worker"])
    assert named[1:3] == ["-m", "celery"]
    node = named.index("-n") + 1
    assert named[node] == "cw-agents-7@%h" and plain[node].startswith("cw-agents-")
    assert named[:node] + named[node + 1 :] == plain[:node] + plain[node + 1 :]
    assert named[named.index("-c") + 1] == concurrency


def test_the_flower_unit_always_asks_for_a_password(
    district: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    words = exec_start(SYSTEMD / "cw-flower.service")[1:]
    assert words == ["flower"]
    argv, env = exec_of(monkeypatch, [*words, "--port", str(free_port())])
    user, _, password = env["FLOWER_BASIC_AUTH"].partition(":")
    assert user and len(password) >= 16
    assert not any("basic" in word for word in argv)


def test_flower_in_a_container_listens_everywhere_with_the_given_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compose and Kubernetes run `cw flower --address 0.0.0.0` without the repository."""
    monkeypatch.setenv("CW_REPO", str(tmp_path / "not-cloned"))
    monkeypatch.setenv("CW_BROKER_URL", "redis://:pw@127.0.0.1:1/0")
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "admin:a-long-password")
    monkeypatch.chdir(tmp_path)
    words = service_argv(compose()["services"]["flower"])[3:]  # after tini -- cw
    kube = of_kind("Deployment")["cw-flower"]["spec"]["template"]["spec"]["containers"][0]
    assert kube["args"] == words and "command" not in kube
    argv, env = exec_of(monkeypatch, [*words[:-1], str(free_port())])
    assert "--address=0.0.0.0" in argv and env["FLOWER_BASIC_AUTH"] == "admin:a-long-password"
    assert not any("basic" in word or "a-long-password" in word for word in argv)
    assert not (tmp_path / "not-cloned").exists()


def test_flower_refuses_a_basic_auth_that_is_not_user_and_password(
    district: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "admin")
    result = CliRunner().invoke(cli, ["flower", "--show-credentials"])
    assert result.exit_code != 0 and "FLOWER_BASIC_AUTH" in result.output


def test_the_broker_url_of_every_host_carries_a_password() -> None:
    url = urlsplit(env_file(SYSTEMD / "cw.env.example")["CW_BROKER_URL"])
    assert url.scheme == "redis" and url.password


# -- Kubernetes --------------------------------------------------------------------------------


def manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _f, d in manifests() if d["kind"] == kind}


def pod_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    pod = workload["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def workloads() -> dict[str, dict[str, Any]]:
    return {**of_kind("Deployment"), **of_kind("StatefulSet")}


def cw_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, workload in workloads().items():
        for container in pod_containers(workload):
            if container["image"].split(":")[0] == IMAGE:
                yield f"{name}/{container['name']}", container


def is_crd(doc: dict[str, Any]) -> bool:
    return doc["apiVersion"].startswith(("keda.sh/", "kustomize.config.k8s.io/"))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_pass_the_kubernetes_schemas(version: str) -> None:
    checked = 0
    for path, doc in manifests():
        if is_crd(doc):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(f"{path} {doc['kind']}: {error.path}: {error.message}") from None
        checked += 1
    assert checked >= 12


def test_the_schema_check_can_fail() -> None:
    deployment = yaml.safe_load((KUBE / "worker.yaml").read_text())
    deployment["spec"]["template"]["spec"]["contaners"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    expected = {p.name for p in MANIFESTS} - NOT_APPLIED
    assert sorted(kustomization["resources"]) == sorted(expected)
    assert [i["name"] for i in kustomization["images"]] == [IMAGE]


@pytest.mark.parametrize("name", sorted(dict(cw_containers())))
def test_every_cw_container_runs_a_real_entry_point(name: str) -> None:
    container = dict(cw_containers())[name]
    entrypoint = container.get("command", dockerfile_instruction("ENTRYPOINT"))
    argv = [*entrypoint, *container.get("args", [])]
    if name.endswith("/clone"):  # the pod's own clone of the hub, before `cw init`
        assert argv[:2] == ["sh", "-c"] and 'git clone -- "$CW_GIT_HUB" "$CW_REPO"' in argv[2]
        return
    check_entry_point(argv)


def test_agent_workers_merge_worker_and_beat_have_their_shape() -> None:
    deployments = of_kind("Deployment")
    for name in ("cw-merge-worker", "cw-beat"):
        assert deployments[name]["spec"]["replicas"] == 1, name
        assert deployments[name]["spec"]["strategy"] == {"type": "Recreate"}, name
    worker = deployments["cw-worker"]["spec"]["template"]["spec"]
    repo = of_kind("ConfigMap")["cw-config"]["data"]["CW_REPO"]
    for container in worker["initContainers"] + worker["containers"]:
        mounts = [m["mountPath"] for m in container["volumeMounts"]]
        assert any(repo.startswith(f"{m}/") for m in mounts), container["name"]
    assert worker["containers"][0]["args"] == ["worker"]


def test_redis_and_postgres_keep_their_data_on_persistent_volumes() -> None:
    sets = of_kind("StatefulSet")
    for name, path in (("redis", "/data"), ("postgres", "/var/lib/postgresql/data")):
        claims = [c["metadata"]["name"] for c in sets[name]["spec"]["volumeClaimTemplates"]]
        mounts = {m["mountPath"]: m["name"] for m in sets[name]["spec"]["template"]["spec"]
                  ["containers"][0]["volumeMounts"]}  # fmt: skip
        assert mounts.get(path) in claims, name


def container_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def secret_ref(entry: dict[str, Any]) -> tuple[str, str]:
    ref = entry["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def test_redis_requires_its_password_everywhere() -> None:
    redis = of_kind("StatefulSet")["redis"]["spec"]["template"]["spec"]["containers"][0]
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert secret_ref(container_env(redis)["REDIS_PASSWORD"]) == ("cw-secrets", "REDIS_PASSWORD")
    for name, container in cw_containers():
        if name.endswith(("/clone", "/init")):  # git and `cw init` need no broker
            continue
        env = container_env(container)  # none may fall back to its own Redis
        assert env["CW_BROKER_URL"]["value"].startswith("redis://:$(REDIS_PASSWORD)@"), name
        assert secret_ref(env["REDIS_PASSWORD"]) == ("cw-secrets", "REDIS_PASSWORD")


def test_variable_references_name_variables_defined_before_them() -> None:
    config = set(of_kind("ConfigMap")["cw-config"]["data"])
    for workload in workloads().values():
        for container in pod_containers(workload):
            defined = set(config) if container.get("envFrom") else set()
            for entry in container.get("env", []):
                for ref in re.findall(r"\$\((\w+)\)", entry.get("value", "")):
                    assert ref in defined, f"{container['name']}: {entry['name']} uses {ref}"
                defined.add(entry["name"])
            for ref in re.findall(r"\$\((\w+)\)", " ".join(container.get("args", []))):
                assert ref in defined, f"{container['name']}: args use {ref}"


def test_flower_asks_for_a_password_from_the_secret() -> None:
    flower = of_kind("Deployment")["cw-flower"]["spec"]["template"]["spec"]["containers"][0]
    env = container_env(flower)
    assert secret_ref(env["FLOWER_BASIC_AUTH"]) == ("cw-secrets", "FLOWER_BASIC_AUTH")
    assert not any("basic" in word for word in flower["args"])
    assert of_kind("Service")["flower"]["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_every_secret_a_pod_reads_is_in_the_secret_example() -> None:
    keys = set(of_kind("Secret")["cw-secrets"]["stringData"])
    used = {
        secret_ref(entry)[1]
        for workload in workloads().values()
        for container in pod_containers(workload)
        for entry in container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    assert used == keys
    readers = {n for n, c in cw_containers() if "ANTHROPIC_API_KEY" in container_env(c)}
    assert readers == {"cw-worker/worker"}


def test_configmap_settings_are_valid_cw_settings(tmp_path: Path) -> None:
    check_settings(of_kind("ConfigMap")["cw-config"]["data"], "configmap.yaml", tmp_path)


def test_keda_scales_agent_workers_on_the_agents_list_with_the_redis_password() -> None:
    scaled = of_kind("ScaledObject")["cw-worker"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] in of_kind("Deployment")
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "redis" and meta["listName"] == "agents"
    assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"
    host, _, port = meta["address"].partition(":")
    assert host.split(".")[0] in of_kind("Service") and port == "6379"
    concurrency = of_kind("ConfigMap")["cw-config"]["data"]["CW_CONCURRENCY"]
    assert meta["listLength"] == concurrency
    auth = of_kind("TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    (ref,) = auth["spec"]["secretTargetRef"]
    assert (ref["parameter"], ref["name"], ref["key"]) == ("password", "cw-secrets",
                                                           "REDIS_PASSWORD")  # fmt: skip


# -- documentation and secrets -----------------------------------------------------------------


def documented_variables() -> set[str]:
    names = {n for path in SYSTEMD.glob("*.env.example") for n in env_file(path)}
    names |= set(of_kind("Secret")["cw-secrets"]["stringData"])
    return names | set(of_kind("ConfigMap")["cw-config"]["data"])


def test_the_deploy_readme_explains_every_variable_and_the_readme_points_to_it() -> None:
    text = DEPLOY_README.read_text()
    missing = sorted(n for n in documented_variables() if f"`{n}`" not in text)
    assert missing == []
    assert "deploy/README.md" in (ROOT / "README.md").read_text()


def deploy_files() -> list[Path]:
    listed = [COMPOSE, ENV_EXAMPLE, DOCKERFILE, ROOT / ".dockerignore"]
    return [*listed, *sorted(p for p in DEPLOY.rglob("*") if p.is_file())]


def is_placeholder(value: str) -> bool:
    """Empty, a `change-me` stand-in, `<your key>`, or a reference filled in at run time."""
    value = value.strip().strip("'\"")
    return not value or value.startswith("<") or any(m in value for m in ("change-me", "${", "$("))


def real_secrets(text: str) -> list[str]:
    """Values that look like real secrets: API keys, passwords that are not placeholders."""
    found = re.findall(r"sk-ant-[\w-]+", text)
    for key, value in re.findall(r"^[ \t-]*([\w.-]+)[ \t]*[=:][ \t]*(.*)$", text, re.MULTILINE):
        if SECRET_WORDS.search(key) and not value.startswith(("{", "[")):
            found += [] if is_placeholder(value) else [f"{key}={value}"]
    for url in re.findall(r"\w+://[^\s\"']+", text):
        password = urlsplit(url).password
        found += [] if password is None or is_placeholder(password) else [url]
    return found


@pytest.mark.parametrize(
    "text",
    [
        "ANTHROPIC_API_KEY=sk-ant-api03-abcdef",
        "REDIS_PASSWORD=hunter2",
        "  POSTGRES_PASSWORD: s3cret",
        "CW_BROKER_URL=redis://:hunter2@redis:6379/0",
    ],
)
def test_the_secret_scan_finds_real_looking_secrets(text: str) -> None:
    assert real_secrets(text)


@pytest.mark.parametrize("path", deploy_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_deployment_file_holds_a_real_secret(path: Path) -> None:
    assert real_secrets(path.read_text()) == []


@pytest.mark.parametrize("path", [COMPOSE, *MANIFESTS], ids=lambda p: p.name)
def test_every_yaml_file_parses(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents and all(isinstance(d, dict) for d in documents)
