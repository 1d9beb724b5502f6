"""Stand-ins shared by the unit and integration tests.

``sync``: a fake clock, the node's shared memory and probe sender as the sync loop sees them,
in-memory stores that can be told to fail (``MemoryStore``, the loop's ``StateStore``;
``MemoryLocationStore``, the location records), and ``Harness`` (a ``SyncLoop`` wired to them,
on any store). ``ksr``: a fake of Kamailio's ``KSR`` module for the Kamailio edge. ``edge``:
``Node``, one balancer node's ``Embedded``, called as ``kamailio.cfg``'s request route calls it, and
sync loop run through that fake.
``tests/integration/test_store_contracts.py`` holds the in-memory stores to the real ones'
contract.
"""
