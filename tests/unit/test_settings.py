"""Settings: config file, environment, validation with readable errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cw import defaults
from cw.agents.registry import ADAPTERS
from cw.errors import ConfigError, NotAGitRepository, NotInitialized
from cw.settings import Settings, find_repo, mask_password


def write_config(repo: Path, text: str) -> None:
    (repo / ".cw").mkdir(parents=True, exist_ok=True)
    (repo / ".cw" / "config.toml").write_text(text)


def test_environment_wins_over_the_config_file(tmp_path: Path) -> None:
    write_config(tmp_path, 'agent_command = "from-file"\nlease = 12\n')
    s = Settings.load(env={"CW_REPO": str(tmp_path), "CW_AGENT_COMMAND": "from-env"})
    assert (s.agent_command, s.lease) == ("from-env", 12.0)


def test_defaults_put_state_under_dot_cw(tmp_path: Path) -> None:
    s = Settings.load(env={"CW_REPO": str(tmp_path)})
    assert s.db_url == f"sqlite:///{tmp_path}/.cw/cw.db"
    assert s.integration_branch == "cw/integration"
    assert not s.initialized


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CW_LEASE": "soon"}, "CW_LEASE: expected a number, got 'soon'"),
        ({"CW_LEASE": "nan"}, "CW_LEASE: expected a number, got 'nan'"),
        ({"CW_HEARTBEAT": "inf"}, "CW_HEARTBEAT: expected a number, got 'inf'"),
        ({"CW_MERGE_TRAIN": "2.7"}, "CW_MERGE_TRAIN: expected a whole number, got '2.7'"),
        ({"CW_AGENT": "nope"}, "CW_AGENT: expected one of claude, codex, command, got 'nope'"),
        ({"CW_WEB_PORT": "70000"}, "CW_WEB_PORT: at most 65535, got '70000'"),
        ({"CW_HEARTBEAT": "100"}, "heartbeat (100 s) must be shorter than lease (30 s)"),
        ({"CW_INTEGRATION_BRANCH": "bad..name"}, "CW_INTEGRATION_BRANCH: 'bad..name' is not a"),
        ({"CW_DATABASE_URL": "foo://x"}, "CW_DATABASE_URL: 'foo://x' is neither"),
        ({"CW_DATABASE_URL": "sqlite:///rel.db"}, "names a relative path"),
        ({"CW_DATABASE_URL": "postgres+psycopg://h/cw"}, "is neither sqlite:////absolute"),
        ({"CW_CONCURRENCY": "0"}, "CW_CONCURRENCY: must be positive"),
        ({"CW_MERGE_RERERE": "maybe"}, "CW_MERGE_RERERE: expected true or false, got 'maybe'"),
        ({"CW_REVIEW": "sometimes"}, "CW_REVIEW: expected one of auto, manual, got 'sometimes'"),
        ({"CW_OVERLAP": "often"}, "CW_OVERLAP: expected one of prefer, strict, ignore, got 'of"),
        ({"CW_AGENT_NICE": "20"}, "CW_AGENT_NICE: at most 19, got '20'"),
        ({"CW_AGENT_NICE": "-5"}, "CW_AGENT_NICE: must be 0 or more, got '-5'"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.load(env={"CW_REPO": str(tmp_path), **env})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("merge_train = 0\n", "config.toml: merge_train: must be positive, got 0"),
        ("merge_train = 2.7\n", "config.toml: merge_train: expected a whole number, got 2.7"),
        ("merge_train = true\n", "config.toml: merge_train: expected a whole number, got True"),
        ('verify_command = ["make", "test"]\n', "config.toml: verify_command: expected text"),
        ("merge_rerere = 1\n", "config.toml: merge_rerere: expected true or false, got 1"),
        ("lease = nan\n", "config.toml: lease: expected a number, got nan"),
        ("[review]\n", "config.toml: review: expected text, got {}"),
    ],
)
def test_a_bad_value_in_the_config_file_is_named_as_written_there(
    tmp_path: Path, line: str, message: str
) -> None:
    write_config(tmp_path, line)
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.load(env={"CW_REPO": str(tmp_path)})


def test_a_repository_that_is_not_there_is_named(tmp_path: Path) -> None:
    settings = Settings.load(env={"CW_REPO": str(tmp_path / "gone")})  # `cw flower` needs none
    with pytest.raises(NotInitialized, match=r"CW_REPO: .* is not a directory"):
        settings.require_initialized()


@pytest.mark.parametrize(
    ("raw", "value"), [("yes", True), ("TRUE", True), ("0", False), ("off", False)]
)
def test_switches_read_the_usual_words(tmp_path: Path, raw: str, value: bool) -> None:
    assert (
        Settings.load(env={"CW_REPO": str(tmp_path), "CW_MERGE_RERERE": raw}).merge_rerere is value
    )


def test_a_switch_in_the_config_file_is_a_toml_boolean(tmp_path: Path) -> None:
    write_config(tmp_path, "merge_rerere = true\n")
    assert Settings.load(env={"CW_REPO": str(tmp_path)}).merge_rerere is True


def test_unknown_config_keys_are_errors_not_silently_ignored(tmp_path: Path) -> None:
    write_config(tmp_path, 'agent_comand = "typo"\n')
    with pytest.raises(ConfigError, match="unknown setting 'agent_comand'"):
        Settings.load(env={"CW_REPO": str(tmp_path)})


def test_broken_toml_is_one_clear_error(tmp_path: Path) -> None:
    write_config(tmp_path, "lease = = 3\n")
    with pytest.raises(ConfigError, match=r"config\.toml: not valid TOML"):
        Settings.load(env={"CW_REPO": str(tmp_path)})


def test_child_env_carries_what_differs_from_the_defaults(tmp_path: Path) -> None:
    s = Settings.load(env={"CW_REPO": str(tmp_path), "CW_LEASE": "7"})
    assert s.child_env() == {"CW_REPO": str(tmp_path), "CW_LEASE": "7.0"}


def test_a_socket_path_too_long_for_the_os_moves_to_tmp(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    socket = Settings.load(env={"CW_REPO": str(deep)}).redis_socket
    assert str(socket).startswith("/tmp/cw-") and len(str(socket)) < 100
    assert socket == Settings.load(env={"CW_REPO": str(deep)}).redis_socket


def test_outside_a_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotAGitRepository, match="not inside a git repository"):
        find_repo(tmp_path)


def test_agent_caps_come_from_a_config_table_and_the_environment_wins(tmp_path: Path) -> None:
    write_config(tmp_path, "agent = 'claude'\n[max_running]\nclaude = 4\ncodex = 2\n")
    s = Settings.load(env={"CW_REPO": str(tmp_path), "CW_MAX_RUNNING_CLAUDE": "3"})
    assert dict(s.max_running) == {"claude": 3, "codex": 2}
    assert s.running_cap == 3, "the district's adapter's cap"
    assert s.child_env()["CW_MAX_RUNNING_CODEX"] == "2"
    assert Settings.load(env=s.child_env()).max_running == s.max_running
    assert Settings.load(env={"CW_REPO": str(tmp_path), "CW_AGENT": "command"}).running_cap is None


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        ("", {"CW_MAX_RUNNING_CLAUDE": "-1"}, "CW_MAX_RUNNING_CLAUDE: expected a positive whole"),
        ("", {"CW_MAX_RUNNING_CLAUDE": "four"}, "CW_MAX_RUNNING_CLAUDE: expected a positive"),
        ("", {"CW_MAX_RUNNING_GPT": "2"}, "CW_MAX_RUNNING_GPT: no adapter 'gpt'; known: claude"),
        ("[max_running]\nclaude = 0\n", {}, r"\[max_running\] claude: expected a positive"),
        ("[max_running]\nclaude = 2.5\n", {}, r"\[max_running\] claude: expected a positive"),
        ("[max_running]\nclade = 2\n", {}, r"\[max_running\] clade: no adapter 'clade'"),
        ("max_running = 4\n", {}, r"\[max_running\]: expected a table of adapter = count"),
    ],
)
def test_a_bad_agent_cap_names_the_setting(
    tmp_path: Path, config: str, env: dict[str, str], message: str
) -> None:
    write_config(tmp_path, config)
    with pytest.raises(ConfigError, match=message):
        Settings.load(env={"CW_REPO": str(tmp_path), **env})


def test_every_adapter_cw_runs_may_be_capped() -> None:
    assert sorted(ADAPTERS) == sorted(defaults.ADAPTER_NAMES)


def test_agents_run_nicer_by_default_and_zero_keeps_the_worker_s_priority(tmp_path: Path) -> None:
    assert Settings.load(env={"CW_REPO": str(tmp_path)}).agent_nice == 10
    assert Settings.load(env={"CW_REPO": str(tmp_path), "CW_AGENT_NICE": "0"}).agent_nice == 0


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        ('fsui_dir = "/abs"\n', {}, "config.toml: fsui_dir: '/abs' must be a directory inside"),
        ("", {"CW_FSUI_DIR": "../out"}, "CW_FSUI_DIR: '../out' must be a directory inside"),
        ("", {"CW_FSUI_DIR": ""}, "CW_FSUI_DIR: '' must be a directory inside"),
        ("", {"CW_INTEGRATION_BRANCH": ""}, "CW_INTEGRATION_BRANCH: '' is not a name git allows"),
        ("", {"CW_INTEGRATION_BRANCH": "refs/heads/x"}, "'refs/heads/x': give the branch's name"),
        ("", {"CW_BROKER_URL": "memory://"}, "CW_BROKER_URL: 'memory://' is not a Redis URL"),
        ("", {"CW_BROKER_URL": "garbage"}, "CW_BROKER_URL: 'garbage' is not a Redis URL"),
        (
            'broker_url = "amqp://u:pw@host//"\n',
            {},
            "config.toml: broker_url: 'amqp://u:***@host//' is not a Redis URL",
        ),
    ],
)
def test_the_file_uis_directory_and_an_empty_branch_are_checked_where_written(
    tmp_path: Path, config: str, env: dict[str, str], message: str
) -> None:
    """Checked by every command as it reads the settings, named as written (the file UI alone
    checked its directory, naming CW_FSUI_DIR for the config file's; an empty value passed)."""
    write_config(tmp_path, config)
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.load(env={"CW_REPO": str(tmp_path), **env})


@pytest.mark.parametrize("written", ["./mirror", "mirror/", "mirror//", "./mirror/."])
def test_the_file_uis_directory_is_kept_in_one_form(tmp_path: Path, written: str) -> None:
    """Its entry in .git/info/exclude is written from it: `/./mirror/` would match nothing."""
    settings = Settings.load(env={"CW_REPO": str(tmp_path), "CW_FSUI_DIR": written})
    assert settings.fsui_dir == "mirror"


def test_a_broker_url_is_shown_without_its_password() -> None:
    assert mask_password("redis://:s3cret@h:1/0") == "redis://:***@h:1/0"
    assert mask_password("redis://user:s3cret@h:1/0") == "redis://user:***@h:1/0"
    assert mask_password("redis://h:1/0") == "redis://h:1/0"


def test_the_state_folder_paths_read_on_the_class_are_their_descriptors() -> None:
    """So that ``mock.patch.object(Settings, "lock_dir", ...)`` and introspection work."""
    assert not isinstance(Settings.lock_dir, Path)
    assert Settings.load(env={"CW_REPO": "/r"}).lock_dir == Path("/r/.cw/locks")
