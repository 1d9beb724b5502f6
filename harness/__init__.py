"""The test bed: the demo, the downstream proxies and SIPp the end-to-end tests and the
benchmarks run, and a real Prometheus for tests.

It lives in the repository, not in the ``counterpoise`` package, so a wheel holds only what a
running balancer uses. It is imported from a clone (the repository's root on ``sys.path``:
pytest's rootdir, ``python -m bench``, ``scripts/demo.sh``) and reads the files beside it.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
"""The clone: ``downstream/``, ``sipp-scenarios/`` and ``deploy/`` are read from here."""
