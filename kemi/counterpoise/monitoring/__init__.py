"""Prometheus metrics of a balancer node (docs/monitoring.md).

No KSR and no redis here: ``node`` turns the sync loop's state and the node's counters into
metric families, ``scrape`` serves them over HTTP without threads (Kamailio's timer process
polls it once per tick). The load agent's own metrics are the agent's (``agent/metrics.py``):
this package imports nothing of the agent, so the two never import each other.
"""
