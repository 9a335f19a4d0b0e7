import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest

from streamheal.cli import EXIT_CONFIG, main
from streamheal.config import Config, ConfigError, EngineConfig, config_hash, load_config
from streamheal.kafka.snapshots import _config_hash

PASSWORD = "hunter2-do-not-print"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_the_shipped_config_file_loads() -> None:
    config = load_config(Path(__file__).parents[1] / "config" / "streamheal.toml", env={})
    assert config.topics.events == "streamheal.events"


def test_env_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[engine]\nbatch_size = 100\n")
    config = load_config(
        path,
        env={
            "STREAMHEAL_ENGINE__BATCH_SIZE": "250",
            "STREAMHEAL_KAFKA__BOOTSTRAP_SERVERS": "b:9092",
        },
    )
    assert config.engine.batch_size == 250
    assert config.kafka.bootstrap_servers == "b:9092"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[engine]\nbatch_size = 0\n",
            "engine.batch_size: expected an integer between 1 and 100000, got 0",
        ),
        (
            "[engine]\nbatch_size = 1e8\n",
            "engine.batch_size: expected an integer between 1 and 100000, got 100000000.0",
        ),
        (
            "[engine]\nbatch_size = 100001\n",
            "engine.batch_size: expected an integer between 1 and 100000, got 100001",
        ),
        ("[engine]\njoin_buffer_size = 1000001\n", "engine.join_buffer_size: expected an integer"),
        ("[events]\nmax_bytes = 10485761\n", "events.max_bytes: expected an integer between 1"),
        ("[topics]\npartitions = 10001\n", "topics.partitions: expected an integer between 1"),
        ("[topics]\nevents = ''\n", "topics.events: expected a Kafka topic name"),
        ("[topics]\ndlq = 'dead letters'\n", "topics.dlq: expected a Kafka topic name"),
        ("[topics]\nalerts = 'a/b'\n", "topics.alerts: expected a Kafka topic name"),
        ("[topics]\nstate = '..'\n", "topics.state: expected a Kafka topic name"),
        ("[topics]\nstate = '.'\n", "topics.state: expected a Kafka topic name"),
        (f"[topics]\nmetrics = '{'m' * 250}'\n", "topics.metrics: expected a Kafka topic name"),
        ("[topics]\npredictions = 'streamheal.events'\n", "collides with topics.events"),
        ("[kafka]\ngroup_id = ''\n", "kafka.group_id: expected a non-empty string, got ''"),
        ("[kafka]\nclient_id = ' '\n", "kafka.client_id: expected a non-empty string"),
        ("[kafka]\nbootstrap_servers = ''\n", "kafka.bootstrap_servers: expected a non-empty"),
        ("[kafka]\nconnect_timeout_seconds = 0\n", "kafka.connect_timeout_seconds: expected a"),
        ("[kafka]\nconnect_timeout_seconds = inf\n", "kafka.connect_timeout_seconds: expected"),
        ("[kafka]\ncommon = {a = {b = 1}}\n", "kafka.common: expected a table of librdkafka"),
        # What exactly-once rests on is the worker's to set, not a tuning knob.
        (
            '[kafka]\nconsumer = {"enable.auto.commit" = true}\n',
            'kafka.consumer."enable.auto.commit": the worker sets it; offsets are committed',
        ),
        (
            '[kafka]\nconsumer = {"isolation.level" = "read_uncommitted"}\n',
            'kafka.consumer."isolation.level": the worker sets it',
        ),
        ('[kafka]\nproducer = {"transactional.id" = "x"}\n', 'kafka.producer."transactional.id"'),
        ('[kafka]\ncommon = {"acks" = 1}\n', 'kafka.common."acks": the worker sets it'),
        # librdkafka's own names for the same properties, any case, with its topic. prefix.
        ('[kafka]\nproducer = {"request.required.acks" = 1}\n', "the worker sets it"),
        ('[kafka]\ncommon = {"topic.acks" = 1}\n', 'kafka.common."topic.acks": the worker'),
        ('[kafka]\nconsumer = {" Enable.Auto.Commit " = true}\n', "the worker sets it"),
        ('[kafka]\nconsumer = {"auto.commit.enable" = true}\n', "the worker sets it"),
        ("[guards]\nmax_abs_value = inf\n", "guards.max_abs_value: expected a finite number"),
        ("[policy]\npromotion_margin = 2\n", "policy.promotion_margin: expected an accuracy"),
        ("[registry]\npath = ''\n", "registry.path: expected a non-empty string, got ''"),
        ("[engine]\nmode = 'fast'\n", "engine.mode: expected one of 'per_event', 'mini_batch'"),
        ("[engine]\nbatchsize = 5\n", "engine.batchsize: unknown key; expected one of"),
        ("[model]\nname = 'svm'\n", "model.name: expected one of 'logistic_regression'"),
        (
            "[kafka]\nbootstrap_servers = 9092\n",
            "kafka.bootstrap_servers: expected a non-empty string, got 9092",
        ),
        ("[nope]\n", "nope: unknown key"),
        ("engine = 3\n", "engine: expected a table"),
        ("[engine\n", "not valid TOML"),
    ],
)
def test_a_bad_config_names_the_key_and_the_expected_form(tmp_path, text, message) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        load_config(write(tmp_path, text), env={})
    assert message in str(err.value)


def streamheal(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        # Generous: a deadline here only catches a hang, never a busy machine.
        [sys.executable, "-m", "streamheal.cli", *args],
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_worker_refuses_to_start_on_a_bad_config(tmp_path: Path) -> None:
    result = streamheal("run", "-c", str(write(tmp_path, "[engine]\nbatch_size = -1\n")))
    assert result.returncode == 78
    assert "engine.batch_size: expected an integer between 1 and 100000, got -1" in result.stderr


def test_the_connect_timeout_defaults_to_30_seconds_and_takes_a_number() -> None:
    assert load_config(None, env={}).kafka.connect_timeout_seconds == 30.0
    env = {"STREAMHEAL_KAFKA__CONNECT_TIMEOUT_SECONDS": "2.5"}
    assert load_config(None, env=env).kafka.connect_timeout_seconds == 2.5


@pytest.mark.parametrize(
    "text",
    [
        f'[kafka]\ncommon = {{"sasl.password" = "{PASSWORD}", "bad" = [1]}}\n',
        f'[kafka.common]\n"ssl.key.password" = "{PASSWORD}"\n"nested" = {{a = 1}}\n',
        f'[kafka]\nbootstrap_servers = {{"sasl.oauthbearer.client.secret" = "{PASSWORD}"}}\n',
        f'[kafka]\nproducer = {{"sasl.oauthbearer.token" = "{PASSWORD}", "x" = {{}}}}\n',
        f'[kafka]\nconsumer = {{"ssl.KEY.Password" = "{PASSWORD}", "x" = [2]}}\n',
        f'kafka = {{common = {{"sasl.password" = "{PASSWORD}"}}, group_id = 5}}\n',
        f'kafka = [{{"sasl.password" = "{PASSWORD}"}}]\n',
    ],
)
def test_a_config_error_never_shows_a_secret(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={})
    assert PASSWORD not in str(err.value)
    assert "kafka" in str(err.value)


def test_a_config_error_from_the_environment_never_shows_a_secret() -> None:
    env = {"STREAMHEAL_KAFKA__COMMON": f'{{"sasl.password" = "{PASSWORD}", "n" = [1]}}'}
    with pytest.raises(ConfigError) as err:
        load_config(None, env=env)
    assert PASSWORD not in str(err.value)
    assert "'sasl.password': '***'" in str(err.value)


def test_the_repr_of_a_config_never_shows_a_secret() -> None:
    config = Config().replace(
        kafka={"common": {"sasl.username": "alice", "sasl.password": PASSWORD}}
    )
    for shown in (repr(config), str(config), repr(config.kafka), f"{config.kafka}"):
        assert PASSWORD not in shown
        assert "'sasl.password': '***'" in shown and "'sasl.username': 'alice'" in shown
    assert config.kafka.common["sasl.password"] == PASSWORD  # still there for the clients


def test_the_config_hash_leaves_secrets_out_and_sees_everything_else() -> None:
    one = Config().replace(kafka={"common": {"sasl.password": PASSWORD}})
    two = Config().replace(kafka={"common": {"sasl.password": "another"}})
    assert config_hash(one) == config_hash(two) == _config_hash(one)
    assert len(config_hash(one)) == 16 and int(config_hash(one), 16) >= 0
    assert config_hash(one) != config_hash(Config())  # the key is there, its value is not
    assert config_hash(one) != config_hash(one.replace(model={"params": {"l2": 0.1}}))
    assert config_hash(one) != config_hash(one.replace(kafka={"group_id": "other"}))


def test_a_config_file_that_is_not_utf8_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[kafka]\ngroup_id = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert f"{path}: not UTF-8 text" in str(err.value)


def test_a_directory_as_the_config_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory, not a TOML file"):
        load_config(tmp_path, env={})


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_an_env_value_is_read_as_its_keys_type() -> None:
    config = load_config(
        None,
        env={
            "STREAMHEAL_KAFKA__GROUP_ID": "123",
            "STREAMHEAL_KAFKA__CLIENT_ID": "true",
            "STREAMHEAL_TOPICS__EVENTS": "1e3",
            "STREAMHEAL_ENGINE__BATCH_SIZE": "250",
            "STREAMHEAL_TOPICS__CREATE": "false",
            "STREAMHEAL_KAFKA__PRODUCER": '{"linger.ms" = 20}',
        },
    )
    assert config.kafka.group_id == "123"
    assert config.kafka.client_id == "true"
    assert config.topics.events == "1e3"
    assert config.engine.batch_size == 250
    assert config.topics.create is False
    assert config.kafka.producer == {"linger.ms": 20}


def test_a_badly_typed_env_value_still_names_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"STREAMHEAL_TOPICS__CREATE": "yes"})
    assert str(err.value) == "topics.create: expected true or false, got 'yes'"


@pytest.mark.parametrize("command", ["run", "bench", "replay"])
def test_a_model_param_river_refuses_stops_the_command_with_exit_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    path = str(write(tmp_path, "[model]\nparams = {depth = 3}\n"))
    (tmp_path / "x.jsonl").write_text("")  # the input exists: the config is what is wrong
    args = {
        "run": ["run", "-c", path],
        "bench": ["bench", "--events", "10"],
        "replay": ["replay", "--file", str(tmp_path / "x.jsonl"), "-c", path, "--out", "o"],
    }[command]
    env = {"STREAMHEAL_MODEL__PARAMS": "{depth = 3}"} if command == "bench" else {}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert main(args) == EXIT_CONFIG
    stderr = capsys.readouterr().err
    assert "streamheal: config error: model.params: " in stderr
    assert "unexpected keyword argument 'depth'" in stderr


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["simulate", "breast-cancer"],
        ["simulate", "nope", "--out", "x"],
        ["bench", "--events", "0"],
        ["kafka", "sideways"],
    ],
)
def test_a_bad_command_line_prints_usage_and_exits_2(args: list[str]) -> None:
    result = streamheal(*args)
    assert result.returncode == 2
    assert "usage: streamheal" in result.stderr


def test_simulate_is_deterministic_and_writes_a_truth_file(tmp_path: Path) -> None:
    for name in ("a", "b"):
        result = streamheal(
            "simulate",
            "breast-cancer",
            "--out",
            str(tmp_path / f"{name}.jsonl"),
            "--events",
            "300",
            "--label-delay",
            "5",
            "--seed",
            "9",
        )
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    truth = (tmp_path / "a.truth.json").read_text()
    assert '"index": 150' in truth and '"kind": "covariate"' in truth


def test_bench_prints_the_figures_as_json() -> None:
    import json

    result = streamheal(
        "bench", "--events", "1000", "--rounds", "1", "--kafka-events", "0", "--json"
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    for key in (
        "engine_eps",
        "bare_eps",
        "minibatch_eps",
        "engine_over_bare",
        "minibatch_over_bare",
    ):
        assert figures[key] > 0
    # The label join at its bounds, as in a worker that ran past join_buffer_size events.
    assert figures["full_join"]["capacity"] == 100_000
    assert figures["full_join"]["labeled_us"] > 0 and figures["full_join"]["unlabeled_us"] > 0


def test_hostile_values_stop_at_load_with_a_clear_message_and_no_secret() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"STREAMHEAL_KAFKA__COMMON": '{"sasl.password" = "hunter2",}'})
    assert "hunter2" not in str(caught.value) and "kafka.common" in str(caught.value)
    with pytest.raises(ConfigError, match="NUL"):
        load_config(None, env={"STREAMHEAL_REGISTRY__PATH": "/tmp/a\x00b"})
    with pytest.raises(ConfigError, match="collides"):
        load_config(
            None,
            env={"STREAMHEAL_TOPICS__PREDICTIONS": "a.b.c", "STREAMHEAL_TOPICS__ALERTS": "a_b.c"},
        )


def test_enumerations_are_typed_as_literals_and_still_name_the_key() -> None:
    hints = typing.get_type_hints(EngineConfig)
    assert typing.get_origin(hints["mode"]) is typing.Literal
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"STREAMHEAL_WORKER__GUARANTEE": "twice"})
    assert str(err.value) == (
        "worker.guarantee: expected one of 'exactly-once', 'at-least-once', got 'twice'"
    )
    with pytest.raises(ConfigError, match=r"^policy\.concept: expected a list of actions"):
        Config().replace(policy={"concept": ["snapshot", "panic"]})


def test_an_env_list_of_names_may_be_given_bare_or_as_toml() -> None:
    bare = load_config(None, env={"STREAMHEAL_POLICY__CONCEPT": "snapshot, fork"})
    toml = load_config(None, env={"STREAMHEAL_POLICY__CONCEPT": '["reset"]'})
    assert bare.policy.concept == ["snapshot", "fork"]
    assert toml.policy.concept == ["reset"]
    assert load_config(None, env={"STREAMHEAL_ENGINE__MODE": "mini_batch"}).engine.mode == (
        "mini_batch"
    )


@pytest.mark.parametrize("cadence", ["window_check_every", "model_check_every"])
def test_a_cadence_that_is_no_multiple_of_check_every_is_refused_naming_both_keys(
    cadence: str,
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, env={f"STREAMHEAL_DETECTORS__{cadence.upper()}": "250"})
    message = str(err.value)
    assert f"detectors.{cadence} (250)" in message
    assert "multiple of detectors.check_every (100)" in message


def test_more_confirming_checks_than_the_window_keeps_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"detectors\.confirm_checks \(4\).*confirm_window \(3\)"):
        Config().replace(detectors={"confirm_checks": 4})


def test_a_promotion_minimum_above_its_window_is_refused_naming_both_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "[policy]\npromotion_window = 50\npromotion_min_samples = 80\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert str(err.value).startswith(
        "policy.promotion_min_samples (80) must be <= policy.promotion_window (50)"
    )
    assert load_config(path, env={"STREAMHEAL_POLICY__PROMOTION_WINDOW": "80"})


def test_a_cross_field_rule_stops_the_worker_at_start_with_exit_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[detectors]\ncheck_every = 30\n")
    assert main(["run", "-c", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "detectors.window_check_every (500) must be a multiple of detectors.check_every" in err


def test_scipy_is_a_declared_dependency() -> None:
    text = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    dependencies = tomllib.loads(text)["project"]["dependencies"]
    assert any(d.startswith("scipy") for d in dependencies)
