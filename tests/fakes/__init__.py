"""Stand-ins shared by the unit and integration tests.

``sync``: a fake clock, the node's shared memory and probe sender as the sync loop sees them,
an in-memory ``StateStore`` that can be told to fail, and ``Harness`` (a ``SyncLoop`` wired to
them, on any store). ``ksr``: a fake of Kamailio's ``KSR`` module for the KEMI edge.
"""
