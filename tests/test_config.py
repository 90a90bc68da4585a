import pytest

from hedgepipe.config import DaemonConfig, load_settings
from hedgepipe.errors import ConfigError

KNOWN = ["bus-relay", "echo"]


@pytest.fixture(autouse=True)
def away_from_the_repo(tmp_path, monkeypatch):
    # With no --config, ./etc/hedgepipe.toml is read if present: run where there is none.
    monkeypatch.chdir(tmp_path)


class SecretConfig(DaemonConfig):
    client_secret: str = ""
    depth: int = 10
    secret_fields = frozenset({"client_secret"})


def write(tmp_path, text):
    path = tmp_path / "hedgepipe.toml"
    path.write_text(text)
    return str(path)


def load(path=None, cli=None, environ=None, cfg=SecretConfig):
    return load_settings("echo", cfg, config_path=path, cli=cli, environ=environ or {}, known=KNOWN)


def test_precedence_cli_over_env_over_file_over_default(tmp_path):
    path = write(tmp_path, "[echo]\ndepth = 20\n[runtime]\nsndhwm = 7\n")
    assert load(path).daemon.depth == 20
    env = {"HEDGEPIPE_ECHO__DEPTH": "30", "HEDGEPIPE_RUNTIME__SNDHWM": "9"}
    s = load(path, environ=env)
    assert (s.daemon.depth, s.runtime.sndhwm) == (30, 9)
    assert load(path, cli={"depth": "40"}, environ=env).daemon.depth == 40
    assert load(None).daemon.depth == 10


def test_env_values_parse_as_toml(tmp_path):
    s = load(None, environ={"HEDGEPIPE_ECHO__INPUTS": '["bus-relay", "tcp://127.0.0.1:9"]'})
    assert s.daemon.inputs == ["bus-relay", "tcp://127.0.0.1:9"]
    assert s.endpoint_for("bus-relay").startswith("ipc://")


def test_typo_in_a_key_is_an_error_naming_it(tmp_path):
    path = write(tmp_path, "[echo]\ndepht = 20\n")
    with pytest.raises(ConfigError, match="depht"):
        load(path)
    with pytest.raises(ConfigError, match="sndhmw"):
        load(write(tmp_path, "[runtime]\nsndhmw = 1\n"))


def test_unknown_table_and_bad_env_names_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown table \[feed-deribt\]"):
        load(write(tmp_path, "[feed-deribt]\nx = 1\n"))
    with pytest.raises(ConfigError, match="HEDGEPIPE_RUNTIME_SNDHWM"):
        load(None, environ={"HEDGEPIPE_RUNTIME_SNDHWM": "5"})
    with pytest.raises(ConfigError, match="HEDGEPIPE_NOPE__X"):
        load(None, environ={"HEDGEPIPE_NOPE__X": "5"})


def test_wrong_type_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="int"):
        load(write(tmp_path, '[echo]\ndepth = "deep"\n'))


def test_secrets_only_from_the_environment(tmp_path):
    with pytest.raises(ConfigError, match="HEDGEPIPE_ECHO__CLIENT_SECRET"):
        load(write(tmp_path, '[echo]\nclient_secret = "hunter2"\n'))
    with pytest.raises(ConfigError, match="command line"):
        load(None, cli={"client_secret": "hunter2"})
    assert load(None, environ={"HEDGEPIPE_ECHO__CLIENT_SECRET": "s3"}).daemon.client_secret == "s3"


def test_relative_run_dir_is_relative_to_the_config_file(tmp_path):
    path = write(tmp_path, '[runtime]\nrun_dir = "../run"\n[endpoints]\necho = "ipc://{run_dir}/e.sock"\n')
    s = load(path)
    assert s.runtime.run_dir == str((tmp_path.parent / "run").resolve())
    assert s.endpoints["echo"] == f"ipc://{s.runtime.run_dir}/e.sock"
    assert s.endpoints["bus-relay"] == f"ipc://{s.runtime.run_dir}/bus-relay.sock"


def test_unknown_input_name_is_an_error():
    with pytest.raises(ConfigError, match="nosuch"):
        load(None).endpoint_for("nosuch")


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(str(tmp_path / "nope.toml"))


def test_bad_toml_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="hedgepipe.toml"):
        load(write(tmp_path, "[echo\n"))


def test_the_shipped_config_is_valid():
    from pathlib import Path
    repo_config = Path(__file__).resolve().parents[1] / "etc" / "hedgepipe.toml"
    s = load_settings("bus-relay", DaemonConfig, config_path=str(repo_config), environ={})
    assert s.endpoints["bus-relay"].startswith("tcp://127.0.0.1:")


def test_env_text_is_read_by_the_type_of_its_key():
    env = {"HEDGEPIPE_ECHO__CLIENT_SECRET": "123456",        # digits, but a string key
           "HEDGEPIPE_ECHO__INSTANCE": "1234",
           "HEDGEPIPE_ECHO__DEPTH": "25",
           "HEDGEPIPE_RUNTIME__HEARTBEAT_INTERVAL_S": "0.5"}
    s = load(None, environ=env)
    assert s.daemon.client_secret == "123456" and s.daemon.instance == "1234"
    assert s.daemon.depth == 25 and s.runtime.heartbeat_interval_s == 0.5


def test_env_text_cannot_smuggle_other_keys():
    with pytest.raises(ConfigError, match="HEDGEPIPE_RUNTIME__SNDHWM"):
        load(None, environ={"HEDGEPIPE_RUNTIME__SNDHWM": "5000\nrcvhwm = 1"})


def test_set_text_for_a_list_key_is_a_toml_list():
    s = load_settings("echo", SecretConfig, cli={"topics": '["md.", "hb."]'}, environ={},
                      known=KNOWN, set_keys={"topics"})
    assert s.daemon.topics == ["md.", "hb."]
    with pytest.raises(ConfigError, match="--set topics"):
        load_settings("echo", SecretConfig, cli={"topics": "md."}, environ={}, known=KNOWN,
                      set_keys={"topics"})


def test_errors_name_where_the_bad_value_came_from(tmp_path):
    with pytest.raises(ConfigError, match="HEDGEPIPE_ECHO__DEPTH"):
        load(None, environ={"HEDGEPIPE_ECHO__DEPTH": "deep"})
    with pytest.raises(ConfigError, match=r"hedgepipe\.toml"):
        load(write(tmp_path, '[echo]\ndepth = "deep"\n'))
    with pytest.raises(ConfigError, match="--set depth"):
        load_settings("echo", SecretConfig, cli={"depth": "deep"}, environ={}, known=KNOWN,
                      set_keys={"depth"})


def test_tap_endpoints_leave_out_a_relay_that_repeats_its_inputs(tmp_path):
    from hedgepipe.config import DaemonConfig
    quiet = load_settings(None, DaemonConfig, config_path=write(tmp_path, "[bus-relay]\ninputs = []\n"),
                          environ={}, known=["bus-relay", "echo"])
    assert quiet.tap_endpoints() == [quiet.endpoints["bus-relay"], quiet.endpoints["echo"]]
    relaying = load_settings(None, DaemonConfig, environ={}, known=["bus-relay", "echo"],
                             config_path=write(tmp_path, '[bus-relay]\ninputs = ["echo"]\n'))
    assert relaying.tap_endpoints() == [relaying.endpoints["echo"]]
