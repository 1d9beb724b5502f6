"""Every Redis key and channel name, from one prefix (``key_prefix``, ``cp:``).

docs/redis.md documents the same schema:

``cp:pool``                HASH  proxy URI -> JSON ``core.pool.ProxyConfig``; no expiry.
``cp:pool:version``        STRING integer, incremented by every change of ``cp:pool``.
``cp:weights:<node>``      HASH  proxy URI -> JSON of the weight that node routes with and
                                 every input of it; expires ``node_ttl_ms`` after its write.
``cp:nodes``               ZSET  node name -> epoch ms of its last publish.
``cp:sends:<node>``        STRING JSON ``{proxy uri: [per_s, inflight]}``: what that node
                                 sends to each proxy (``core.policy.share``); written every
                                 sync tick, expires ``share_ttl_ms`` after its write.
``cp:rejects:<node>``      HASH  inputs that node rejected: counts and latest reasons.
``cp:report:<proxy uri>``  STRING msgpack load report of the proxy's agent, ``PX`` expiry.
``cp:reports``             channel the agent publishes the proxy URI on after each report.
``cp:loc:<kind>:<name>``   STRING JSON ``core.location.Record``; kinds in ``LOCATION_KINDS``.
``cp:loc:src:<source>``    ZSET  Call-ID -> expiry (epoch ms) of the dialog records that
                                 caller address holds (``dialog_records_per_source``).
``secret:cp:dialog-keys``  HASH  key id -> ``<active from, epoch ms> <secret hex>``: the keys
                                 that seal the balancer's Record-Routes
                                 (``core.dialog_seal``); no expiry. Outside the prefix on
                                 purpose: the operator's and viewer's ``cp:*`` rights do not
                                 reach it, only the balancer's and the administrator's.
"""

from __future__ import annotations

AOR, PIN, DOMAIN, DIALOG = "aor", "pin", "domain", "dlg"
"""Kinds of location record: a registration, an AOR pin, a domain pin, a dialog."""
LOCATION_KINDS = (PIN, AOR, DOMAIN, DIALOG)
DIALOG_KEYS_NAMESPACE = "secret:"


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.pool = f"{prefix}pool"
        self.pool_version = f"{prefix}pool:version"
        self.nodes = f"{prefix}nodes"
        self.reports_channel = f"{prefix}reports"
        self._weights = f"{prefix}weights:"
        self._rejects = f"{prefix}rejects:"
        self._sends = f"{prefix}sends:"
        self._report = f"{prefix}report:"
        self._location = f"{prefix}loc:"
        self.dialog_keys = f"{DIALOG_KEYS_NAMESPACE}{prefix}dialog-keys"

    def weights(self, node: str) -> str:
        return self._weights + node

    def rejects(self, node: str) -> str:
        return self._rejects + node

    def sends(self, node: str) -> str:
        return self._sends + node

    def report(self, uri: str) -> str:
        return self._report + uri

    def location(self, kind: str, name: str) -> str:
        return f"{self._location}{kind}:{name}"

    def dialog_source(self, source: str) -> str:
        return f"{self._location}src:{source}"
