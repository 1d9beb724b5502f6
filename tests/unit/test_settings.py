"""Settings: defaults, COUNTERPOISE_* overrides and their round trip."""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import tomllib
from pathlib import Path

import pytest

from counterpoise.core.settings import (
    CONFIG_ENV,
    ENV_PREFIX,
    RUNTIME,
    Fallback,
    ProbeMethod,
    SettingError,
    Settings,
    load_settings,
    runtime_changes,
    runtime_values,
    to_environ,
    with_runtime,
)


def test_defaults():
    settings = load_settings({})
    assert settings == Settings()
    assert settings.redis_url == "redis://127.0.0.1:6479/0"
    assert settings.key_prefix == "cp:"
    assert settings.fr_timer_ms == 1500
    assert settings.redis_timeout_ms == 250
    assert (settings.redis_backoff_initial_ms, settings.redis_backoff_max_ms) == (250, 2000)
    assert settings.publish_interval_ms == 1000
    assert settings.node_ttl_ms == 10_000
    assert settings.max_attempts == 3
    assert settings.latency_offset_ms == 10.0
    assert settings.probe_interval_ms == 1000


def test_every_field_has_a_default_of_a_parseable_type():
    for field in dataclasses.fields(Settings):
        kind = type(field.default)
        assert kind in (int, float, str, bool) or issubclass(kind, enum.Enum), field.name


def test_environment_overrides():
    env = {
        "COUNTERPOISE_FR_TIMER_MS": "800",
        "COUNTERPOISE_SLOW_START_FLOOR": "0.25",
        "COUNTERPOISE_NODE_ID": "lb1:5060",
        "COUNTERPOISE_REDIS_URL": "redis://10.0.0.1:6379/3",
        "COUNTERPOISE_LATENCY_OFFSET_MS": "5",
        "FR_TIMER_MS": "1",  # no prefix: ignored
        "COUNTERPOISE_CONFIG": "",  # no file
    }
    settings = load_settings(env)
    assert settings.fr_timer_ms == 800
    assert isinstance(settings.fr_timer_ms, int)
    assert settings.slow_start_floor == 0.25
    assert settings.node_id == "lb1:5060"
    assert settings.node_name() == "lb1:5060"
    assert settings.redis_url == "redis://10.0.0.1:6379/3"
    assert settings.latency_offset_ms == 5.0
    assert isinstance(settings.latency_offset_ms, float)
    assert settings.max_attempts == Settings().max_attempts


def test_process_environment_is_the_default_source(monkeypatch):
    monkeypatch.setenv("COUNTERPOISE_MAX_ATTEMPTS", "5")
    assert load_settings().max_attempts == 5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("COUNTERPOISE_FR_TIMER_MS", "fast"),
        ("COUNTERPOISE_FR_TIMER_MS", "1.5"),
        ("COUNTERPOISE_FR_TIMER_MS", ""),
        ("COUNTERPOISE_SLOW_START_FLOOR", "tenth"),
    ],
)
def test_bad_value_raises_naming_the_variable(name, value):
    with pytest.raises(ValueError, match=name) as error:
        load_settings({name: value})
    assert repr(value) in str(error.value)


def test_to_environ_round_trips_defaults():
    env = to_environ(Settings())
    names = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    assert set(env) == names | {CONFIG_ENV}
    assert env[CONFIG_ENV] == ""  # every value is in the environment: no file
    assert all(isinstance(v, str) for v in env.values())
    assert load_settings(env) == Settings()


def test_to_environ_round_trips_custom_settings():
    settings = Settings(
        redis_url="redis://127.0.0.1:7000/2",
        key_prefix="test:",
        node_id="node-a",
        fr_timer_ms=800,
        latency_offset_ms=2.5,
        slow_start_floor=0.3,
        failure_penalty_ms=1234.5,
        probe_from_uri="sip:probe@example.com",
    )
    env = to_environ(settings)
    assert env["COUNTERPOISE_FR_TIMER_MS"] == "800"
    assert load_settings(env) == settings


def test_node_name_defaults_to_host_name():
    assert Settings().node_name() == os.uname().nodename


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PROBE_METHOD", "PING"),
        ("LOAD_HEADROOM_FLOOR", "2"),
        ("LOAD_EXPIRY_MS", "0"),
        ("LOCATION_SERVER", "maybe"),
        ("LOCATION_FALLBACK", "404"),
        ("DIALOG_RECORD_TTL_MS", "-1"),
        ("LOCATION_REDIS_TIMEOUT_MS", "0"),
        ("LOCATION_CACHE_MS", "-1"),
        ("LOCATION_CACHE_MS", "10001"),
        ("FR_TIMER_MS", "-5"),
        ("SLOW_START_FLOOR", "1.5"),
        ("KEY_PREFIX", ""),
        ("FLOOD_REQUESTS_PER_S", "-1"),
        ("FLOOD_BAN_MS", "0"),
        ("RECORD_CALL_ID_MAX_CHARS", "0"),
        ("DIALOG_QUEUE_MAX_BYTES", "0"),
        ("SIP_SIGNATURE", "edge\r\nX-Injected: 1"),  # would add a header to every reply
        ("SIP_SIGNATURE", 'say "hi"'),  # would end the string in kamailio.cfg
    ],
)
def test_out_of_range_settings_are_refused_naming_the_variable(name: str, value: str):
    with pytest.raises(SettingError, match=f"COUNTERPOISE_{name}="):
        load_settings({f"COUNTERPOISE_{name}": value})


def test_settings_made_in_code_are_checked_too():
    with pytest.raises(SettingError, match=r"^max_attempts=0: must be > 0$"):
        Settings(max_attempts=0)


def test_enums_and_booleans_parse_as_an_operator_writes_them():
    env = {
        "COUNTERPOISE_PROBE_METHOD": "invite",
        "COUNTERPOISE_LOCATION_FALLBACK": "Reject",
        "COUNTERPOISE_LOCATION_SERVER": "off",
    }
    settings = load_settings(env)
    assert settings.probe_method is ProbeMethod.INVITE
    assert settings.location_fallback is Fallback.REJECT
    assert settings.location_server is False
    assert to_environ(settings)["COUNTERPOISE_LOCATION_SERVER"] == "off"
    assert load_settings(to_environ(settings)) == settings


def test_an_unknown_variable_is_refused_with_the_valid_names():
    with pytest.raises(SettingError) as error:
        load_settings({"COUNTERPOISE_FR_TIMER": "800"})
    assert "COUNTERPOISE_FR_TIMER" in str(error.value)
    assert "unknown setting" in str(error.value) and "fr_timer_ms" in str(error.value)


def write_config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "counterpoise.toml"
    path.write_text(text)
    return {CONFIG_ENV: str(path)}


def test_the_config_file_sets_values_and_the_environment_wins(tmp_path: Path):
    env = write_config(
        tmp_path,
        "fr_timer_ms = 800\nlatency_offset_ms = 5\nlocation_server = false\n"
        'probe_method = "invite"\nlisten = "udp:127.0.0.1:5070,tcp:[::1]:5070"\n'
        "max_attempts = 2\n",
    )
    settings = load_settings({**env, "COUNTERPOISE_MAX_ATTEMPTS": "4"})
    assert settings.fr_timer_ms == 800
    assert settings.latency_offset_ms == 5.0 and isinstance(settings.latency_offset_ms, float)
    assert settings.location_server is False
    assert settings.probe_method == ProbeMethod.INVITE
    assert [str(s) for s in settings.listen_sockets()] == ["udp:127.0.0.1:5070", "tcp:[::1]:5070"]
    assert settings.max_attempts == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fr_timer = 800\n", "unknown setting; valid: "),
        ('fr_timer_ms = "fast"\n', "not a valid int"),
        ("fr_timer_ms = 1.5\n", "expected a int"),
        ("location_server = 1\n", "expected a bool"),
        ("fr_timer_ms = -5\n", "must be > 0"),
        ("fr_timer_ms = \n", "Invalid value"),
        ('listen = "sctp:127.0.0.1:5060"\n', "is not one of udp, tcp, tls"),
    ],
)
def test_a_bad_config_file_is_refused_naming_the_file(tmp_path: Path, text: str, message: str):
    env = write_config(tmp_path, text)
    with pytest.raises(SettingError) as error:
        load_settings(env)
    assert env[CONFIG_ENV] in str(error.value) and message in str(error.value)


def test_a_named_config_file_must_exist(tmp_path: Path):
    with pytest.raises(SettingError, match="no such file"):
        load_settings({CONFIG_ENV: str(tmp_path / "missing.toml")})


def test_a_tls_socket_needs_a_certificate():
    with pytest.raises(SettingError, match="tls_certificate"):
        Settings(listen="tls:127.0.0.1:5061")


def test_the_example_config_file_lists_every_setting_at_its_default(tmp_path: Path):
    example = Path(__file__).parents[2] / "deploy" / "counterpoise.toml"
    uncommented = re.sub(r"^# (\w+ = )", r"\1", example.read_text(), flags=re.MULTILINE)
    env = write_config(tmp_path, uncommented)
    assert set(tomllib.loads(uncommented)) == {f.name for f in dataclasses.fields(Settings)}
    assert load_settings(env) == Settings()


def test_runtime_changes_split_what_applies_now_from_what_needs_a_restart():
    old = Settings()
    new = dataclasses.replace(old, max_attempts=2, latency_offset_ms=5.0, redis_url="redis://x/0")
    changed, restart = runtime_changes(old, new)
    assert changed == {"max_attempts": "2", "latency_offset_ms": "5.0"}
    assert restart == ["redis_url"]
    assert with_runtime(old, changed) == dataclasses.replace(new, redis_url=old.redis_url)
    assert set(runtime_values(old)) == set(RUNTIME)


def test_with_runtime_refuses_other_settings_and_bad_values():
    with pytest.raises(SettingError, match="not changeable at runtime"):
        with_runtime(Settings(), {"redis_url": "redis://x/0"})
    with pytest.raises(SettingError, match="must be > 0"):
        with_runtime(Settings(), {"fr_timer_ms": "0"})
