"""Counterpoise: a feedback-weighted SIP load balancer running inside Kamailio."""
