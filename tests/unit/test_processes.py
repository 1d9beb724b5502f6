"""Waiting for a process's socket without taking the port from it; Kamailio's command line."""

import re
import socket
from pathlib import Path

import pytest

from counterpoise import processes
from counterpoise.core.settings import Settings
from counterpoise.errors import StartError


def test_udp_bound_sees_a_bound_socket_and_its_release() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert processes.udp_bound("127.0.0.1", port)
    assert not processes.udp_bound("127.0.0.1", port)


def test_udp_bound_counts_the_wildcard_address() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        assert processes.udp_bound("127.0.0.1", sock.getsockname()[1])


def trydefs() -> dict[str, str]:
    """The defaults ``kamailio.cfg`` gives its defines when run by hand."""
    text = processes.KAMAILIO_CFG.read_text()
    return dict(re.findall(r"^#!trydef (\w+) (.+)$", text, re.M))


def test_the_flood_limits_of_the_default_settings_are_the_configs_own_defaults() -> None:
    defines = processes.flood_defines(Settings())
    assert {name: str(value) for name, value in defines.items()} == {
        name: value for name, value in trydefs().items() if name.startswith("CP_FLOOD")
    }


def test_the_flood_limits_reach_kamailio_as_defines() -> None:
    settings = Settings.of(
        flood_requests_per_s=7,
        flood_registers_per_s=0,
        flood_ban_windows=2,
        flood_ban_ms=1500,
        trusted_upstreams="10.0.0.0/24, 192.0.2.7,2001:db8::/32",
    )
    argv = processes.balancer_argv(settings, Path("/run/cp"))
    defines = {argv[i + 1] for i, arg in enumerate(argv) if arg == "-A"}
    assert {
        "CP_FLOOD_REQUESTS_PER_S=7",
        "CP_FLOOD_REGISTERS_PER_S=0",
        "CP_FLOOD_BAN_WINDOWS=2",
        "CP_FLOOD_BAN_S=2",  # whole seconds, rounded up
        'CP_TRUSTED_UPSTREAMS="10.0.0.0/24,192.0.2.7/32,2001:db8::/32"',
    } <= defines


def test_no_trusted_upstreams_no_define() -> None:
    assert "CP_TRUSTED_UPSTREAMS" not in processes.flood_defines(Settings())


def test_the_include_is_named_absolute_when_kamailio_takes_the_path() -> None:
    include = Path("/opt/cp/counterpoise.cfg")
    assert processes.included_name(include, Path("/home/op")) == str(include)
    argv = processes.balancer_argv(Settings(), Path("/run/cp"))
    assert f'--subst=|^"embed/counterpoise.cfg"$|"{processes.EMBED_CFG}"|' in argv


def test_a_long_include_path_is_named_from_the_working_directory() -> None:
    folder = Path("/tmp") / ("x" * 130)
    include = folder / "counterpoise" / "_assets" / "counterpoise.cfg"
    assert processes.included_name(include, folder) == "counterpoise/_assets/counterpoise.cfg"
    with pytest.raises(StartError, match="too long a path"):
        processes.included_name(include, Path("/"))


def test_the_memory_manager_is_kamailios_allocator_option() -> None:
    for name in ("qm", "tlsf"):
        argv = processes.balancer_argv(Settings.of(memory_manager=name), Path("/run/cp"))
        assert argv[argv.index("-x") + 1] == name
