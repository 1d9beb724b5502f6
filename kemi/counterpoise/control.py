"""Kamailio's JSON-RPC over a Unix datagram socket (the ``jsonrpcs`` module's ``dgram``
transport): how ``counterpoise up`` and the agent talk to a running Kamailio.

The answers are JSON (``tm.stats`` -> ``{"current": 3, "waiting": 1, ...}``), the interface
Kamailio documents, instead of the display text of ``kamcmd``. The reply comes back to the
caller's own datagram socket, bound in Linux's abstract namespace: no file to clean up and no
permission to grant when Kamailio runs as another user.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
from pathlib import Path

RPC_TIMEOUT_S = 1.0
"""A local Kamailio answers in well under a millisecond; 1 s means it is stuck or gone."""

_ids = itertools.count(1)


class RpcError(RuntimeError):
    """No answer, or Kamailio's error answer (``code`` 500 "Method Not Found" when the module
    giving the command is not loaded)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def call(rpc_socket: Path | str, method: str, *params: object, timeout_s: float = RPC_TIMEOUT_S):
    """The ``result`` of one JSON-RPC call to the Kamailio listening on ``rpc_socket``."""
    request_id = next(_ids)
    request = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": request_id}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(f"\0counterpoise-rpc-{os.getpid()}-{request_id}")
        sock.settimeout(timeout_s)
        try:
            sock.sendto(json.dumps(request).encode(), str(rpc_socket))
            answer = json.loads(sock.recv(1 << 20))
        except (OSError, ValueError) as error:
            raise RpcError(f"{method} on {rpc_socket}: {error}") from None
    if "error" in answer:
        error = answer["error"]
        raise RpcError(f"{method}: {error.get('message', error)}", error.get("code"))
    return answer.get("result")
