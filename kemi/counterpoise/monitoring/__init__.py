"""Prometheus metrics of a balancer node and of the load agent (README "Monitoring").

No KSR and no redis here: ``node`` turns the sync loop's state and the node's counters into
metric families, ``agent`` does the same for the agent, ``scrape`` serves them over HTTP
without threads (Kamailio's timer process polls it once per tick).
"""
