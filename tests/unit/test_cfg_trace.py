"""``bench.cfg_trace``: the traced copy of kamailio.cfg, and the actions of a traced log filed
under their message and route."""

from __future__ import annotations

from pathlib import Path

from bench import cfg_trace

from counterpoise import processes


def traced(message: str, route_type: str, route: str) -> str:
    """A line as Kamailio 5.6 logs an action with the traced copy's prefix ("" for none)."""
    prefix = f"{{cp-trace {message}}} " if message else ""
    return (
        f" 1(101) NOTICE: {prefix}*** cfgtrace:dbg_cfg_trace(): {route_type}=[{route}] "
        "c=[/x/embed/counterpoise.cfg] l=114 a=16 n=if"
    )


TRACED = [
    traced("1 <null> INVITE", "request_route", "DEFAULT_ROUTE"),
    traced("1 <null> INVITE", "request_route", "CP_SOURCE"),
    traced("1 <null> INVITE", "branch_route", "CP_SEAL"),
    traced("2 100 INVITE", "onreply_route", "CP_CORE_REPLY"),
    traced("2 200 BYE", "onreply_route", "CP_CORE_REPLY"),
    traced("2 200 OPTIONS", "onreply_route", "CP_CORE_REPLY"),  # a probe's reply
    traced("", "request_route", "CP_RELEASE_TICK"),  # a timer's, no message
    " 2(102) NOTICE: {cp-trace 2 100 INVITE} <core> [core/udp_server.c:1]: another line",
]


def test_each_action_is_filed_under_its_message_and_route_and_the_rest_left_out():
    actions = cfg_trace.count(TRACED, ("INVITE", "100 INVITE", "200 BYE"))
    assert actions.by_message == {"INVITE": 3, "100 INVITE": 1, "200 BYE": 1}
    assert actions.by_route == {
        "DEFAULT_ROUTE (request_route)": 1,
        "CP_SOURCE (request_route)": 1,
        "CP_SEAL (branch_route)": 1,
        "CP_CORE_REPLY (onreply_route)": 2,
    }


def test_the_traced_copy_loads_the_debugger_and_names_each_message(tmp_path: Path):
    tree = cfg_trace.tracing_tree(tmp_path / "tree")
    shipped = (processes.REPO / "kamailio.cfg").read_text().splitlines()
    traced = (tree / "kamailio.cfg").read_text().splitlines()
    at = traced.index(cfg_trace.LOAD_AFTER) + 1
    assert traced[at : at + len(cfg_trace.DEBUGGER)] == list(cfg_trace.DEBUGGER)
    assert cfg_trace.TRACE_PREFIX in traced
    # Nothing else differs: the traced run interprets the shipped routes.
    changed = [line for line in traced if line not in shipped]
    assert changed == [cfg_trace.TRACE_PREFIX, *cfg_trace.DEBUGGER]
    assert (tree / "kemi" / "counterpoise_native.py").exists()
    assert (tree / "embed" / "counterpoise.cfg").exists()
