"""Redis users made at run time: an agent's own user (``core.roles.agent_rules``)."""

from __future__ import annotations

from typing import Any

import redis

from counterpoise.core.roles import agent_rules, agent_user


def add_agent_user(client: redis.Redis[Any], proxy_uri: str, prefix: str, password: str) -> str:
    """Create (or reset) the user of the agent of ``proxy_uri`` and save the ACL to Redis's
    aclfile, so it survives a restart; returns the user name. Needs the administrator."""
    user = agent_user(proxy_uri)
    client.execute_command("ACL", "SETUSER", user, *agent_rules(proxy_uri, prefix, password))
    client.execute_command("ACL", "SAVE")
    return user
