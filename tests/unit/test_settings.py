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
    FIELDS,
    GROUP_OF,
    GROUPS,
    RUNTIME,
    Fallback,
    ProbeMethod,
    SettingError,
    Settings,
    load_settings,
    runtime_changes,
    runtime_values,
    spec_of,
    to_environ,
    with_runtime,
)


def test_defaults():
    settings = load_settings({})
    assert settings == Settings()
    assert settings.redis.redis_url == "redis://127.0.0.1:6479/0"
    assert settings.redis.key_prefix == "cp:"
    assert settings.failover.fr_timer_ms == 1500
    assert settings.redis.redis_timeout_ms == 250
    assert (settings.redis.redis_backoff_initial_ms, settings.redis.redis_backoff_max_ms) == (
        250,
        2000,
    )
    assert settings.redis.publish_interval_ms == 1000
    assert settings.redis.node_ttl_ms == 10_000
    assert settings.failover.max_attempts == 3
    assert settings.latency.latency_offset_ms == 10.0
    assert settings.probes.probe_interval_ms == 1000


def test_every_field_has_a_default_of_a_parseable_type():
    for name, field in FIELDS.items():
        kind = type(field.default)
        assert kind in (int, float, str, bool) or issubclass(kind, enum.Enum), name


def test_every_setting_has_one_name_in_one_group_with_its_docs():
    groups = [getattr(Settings(), group.name) for group in dataclasses.fields(Settings)]
    names = [field.name for group in groups for field in dataclasses.fields(group)]
    assert len(names) == len(set(names)) == len(FIELDS)
    for name, field in FIELDS.items():
        spec = spec_of(field)
        assert spec.meaning.endswith(".") and spec.why.endswith("."), name
        assert GROUP_OF[name] in GROUPS


def test_grouped_access_and_flat_names_agree():
    settings = Settings.of(fr_timer_ms=800, listen="udp:127.0.0.1:5070")
    assert settings.failover.fr_timer_ms == settings.value("fr_timer_ms") == 800
    assert settings.node.listen == "udp:127.0.0.1:5070"
    assert settings.with_values(fr_timer_ms=1500) == Settings.of(listen="udp:127.0.0.1:5070")
    with pytest.raises(SettingError, match="fr_timer=800: unknown setting"):
        Settings.of(fr_timer=800)


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
    assert settings.failover.fr_timer_ms == 800
    assert isinstance(settings.failover.fr_timer_ms, int)
    assert settings.health.slow_start_floor == 0.25
    assert settings.node.node_id == "lb1:5060"
    assert settings.node.node_name() == "lb1:5060"
    assert settings.redis.redis_url == "redis://10.0.0.1:6379/3"
    assert settings.latency.latency_offset_ms == 5.0
    assert isinstance(settings.latency.latency_offset_ms, float)
    assert settings.failover.max_attempts == Settings().failover.max_attempts


def test_process_environment_is_the_default_source(monkeypatch):
    monkeypatch.setenv("COUNTERPOISE_MAX_ATTEMPTS", "5")
    assert load_settings().failover.max_attempts == 5


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
    names = {ENV_PREFIX + name.upper() for name in FIELDS}
    assert set(env) == names | {CONFIG_ENV}
    assert env[CONFIG_ENV] == ""  # every value is in the environment: no file
    assert all(isinstance(v, str) for v in env.values())
    assert load_settings(env) == Settings()


def test_to_environ_for_another_version_holds_only_what_differs_from_the_defaults():
    settings = Settings.of(node_id="node-a", fr_timer_ms=800)
    env = to_environ(settings, changed_only=True)
    assert env == {
        CONFIG_ENV: "",
        ENV_PREFIX + "NODE_ID": "node-a",
        ENV_PREFIX + "FR_TIMER_MS": "800",
    }
    assert load_settings(env) == settings


def test_to_environ_round_trips_custom_settings():
    settings = Settings.of(
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
    assert Settings().node.node_name() == os.uname().nodename


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
        ("FLOOD_BAN_WINDOWS", "61"),
        ("TRUSTED_UPSTREAMS", "10.0.0.0/24,10.0.0.300"),
        ("TRUSTED_UPSTREAMS", "10.0.0.5/24"),  # host bits: a typo for a host or a network
        ("TRUSTED_UPSTREAMS", "sbc.example.com"),  # matched per request: no name to resolve
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
        Settings.of(max_attempts=0)


def test_enums_and_booleans_parse_as_an_operator_writes_them():
    env = {
        "COUNTERPOISE_PROBE_METHOD": "invite",
        "COUNTERPOISE_LOCATION_FALLBACK": "Reject",
        "COUNTERPOISE_LOCATION_SERVER": "off",
    }
    settings = load_settings(env)
    assert settings.probes.probe_method is ProbeMethod.INVITE
    assert settings.location.location_fallback is Fallback.REJECT
    assert settings.location.location_server is False
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
    assert settings.failover.fr_timer_ms == 800
    assert settings.latency.latency_offset_ms == 5.0 and isinstance(
        settings.latency.latency_offset_ms, float
    )
    assert settings.location.location_server is False
    assert settings.probes.probe_method == ProbeMethod.INVITE
    assert [str(s) for s in settings.node.listen_sockets()] == [
        "udp:127.0.0.1:5070",
        "tcp:[::1]:5070",
    ]
    assert settings.failover.max_attempts == 4


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
        ('peers = "udp:10.0.0.2:5060,udp:10.0.0.2:5060"\n', "a socket is listed twice"),
        ('peers = "10.0.0.2:99999"\n', "peers"),
    ],
)
def test_a_bad_config_file_is_refused_naming_the_file(tmp_path: Path, text: str, message: str):
    env = write_config(tmp_path, text)
    with pytest.raises(SettingError) as error:
        load_settings(env)
    assert env[CONFIG_ENV] in str(error.value) and message in str(error.value)


def test_the_config_file_may_group_settings_in_tables(tmp_path: Path):
    env = write_config(tmp_path, "max_attempts = 2\n[failover]\nfr_timer_ms = 800\n")
    assert load_settings(env) == Settings.of(max_attempts=2, fr_timer_ms=800)
    env = write_config(tmp_path, "[failover]\nlisten = 'udp:127.0.0.1:5070'\n")
    with pytest.raises(SettingError, match=r"failover\.listen='listen': unknown setting"):
        load_settings(env)


def test_a_named_config_file_must_exist(tmp_path: Path):
    with pytest.raises(SettingError, match="no such file"):
        load_settings({CONFIG_ENV: str(tmp_path / "missing.toml")})


def test_a_tls_socket_needs_a_certificate():
    with pytest.raises(SettingError, match="tls_certificate"):
        Settings.of(listen="tls:127.0.0.1:5061")
    with pytest.raises(SettingError, match=r"^tls_certificate='': a tls socket needs"):
        load_settings({CONFIG_ENV: "", "COUNTERPOISE_LISTEN": "tls:127.0.0.1:5061"})


def test_the_example_config_file_lists_every_setting_at_its_default(tmp_path: Path):
    example = Path(__file__).parents[2] / "deploy" / "counterpoise.toml"
    uncommented = re.sub(r"^# (\w+ = )", r"\1", example.read_text(), flags=re.MULTILINE)
    env = write_config(tmp_path, uncommented)
    assert set(tomllib.loads(uncommented)) == set(FIELDS)
    assert load_settings(env) == Settings()


def test_runtime_changes_split_what_applies_now_from_what_needs_a_restart():
    old = Settings()
    new = old.with_values(max_attempts=2, latency_offset_ms=5.0, redis_url="redis://x/0")
    changed, restart = runtime_changes(old, new)
    assert changed == {"max_attempts": "2", "latency_offset_ms": "5.0"}
    assert restart == ["redis_url"]
    assert with_runtime(old, changed) == new.with_values(redis_url=old.redis.redis_url)
    assert set(runtime_values(old)) == set(RUNTIME)


def test_runtime_is_declared_with_each_field():
    assert "fr_timer_ms" in RUNTIME and "redis_url" not in RUNTIME
    assert {name for name, field in FIELDS.items() if spec_of(field).runtime} == RUNTIME


def test_with_runtime_refuses_other_settings_and_bad_values():
    with pytest.raises(SettingError, match="not changeable at runtime"):
        with_runtime(Settings(), {"redis_url": "redis://x/0"})
    with pytest.raises(SettingError, match="must be > 0"):
        with_runtime(Settings(), {"fr_timer_ms": "0"})


def test_up_takes_trusted_upstreams_as_repeated_options():
    from counterpoise.cli.main import build_parser
    from counterpoise.cli.up import node_settings

    args = build_parser().parse_args(["up", "--trust", "10.0.0.0/24", "--trust", "2001:db8::7"])
    settings = node_settings(Settings(), args)
    assert settings.edge.trusted_upstreams == "10.0.0.0/24,2001:db8::7"
    bad = build_parser().parse_args(["up", "--trust", "10.0.0.5/24"])
    with pytest.raises(SettingError, match=r"^trusted_upstreams='10\.0\.0\.5/24': expected IP"):
        node_settings(Settings(), bad)


def test_up_takes_the_peers_as_repeated_options():
    from counterpoise.cli.main import build_parser
    from counterpoise.cli.up import node_settings

    given = ["up", "--peer", "udp:192.0.2.12:5060", "--peer", "tcp:[2001:db8::12]:5060"]
    settings = node_settings(Settings(), build_parser().parse_args(given))
    assert [peer.uri() for peer in settings.node.peer_sockets()] == [
        "sip:192.0.2.12:5060",
        "sip:[2001:db8::12]:5060;transport=tcp",
    ]
    bad = build_parser().parse_args(["up", "--peer", "sctp:192.0.2.12:5060"])
    with pytest.raises(SettingError, match=r"^peers='sctp:192\.0\.2\.12:5060': "):
        node_settings(Settings(), bad)
