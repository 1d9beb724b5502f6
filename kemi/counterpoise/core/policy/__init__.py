"""The weight policy: from what was observed of each proxy to the weight it routes with.

One module per part, each with its own state, settings and tests:

* ``latency``: the latency estimate, the one metric the weight divides by (a moving average
  of samples, with silence and queue wait counted as latency);
* ``capacity``: the load estimate (headroom from reported utilisation, measured throughput);
* ``health``: the state machine (up, slow start, down, set aside, the ejection cap, probes);
* ``timers``: the first-reply timeout and the in-flight limit of each proxy;
* ``observed``: each proxy's parts, and a window of samples folded into each;
* ``weights``: ``weigh``, the parts composed into weights, with the formula.

Pure arithmetic: no Kamailio, no Redis, no clock of its own (``now_ms`` is passed in).
"""
