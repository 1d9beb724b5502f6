"""Entry point that Kamailio's app_python3 loads (``modparam("app_python3", "load", ...)``).

app_python3 calls ``mod_init()`` once and then the methods of the object it returns in every
Kamailio process; everything else lives in the ``counterpoise`` package next to this file.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from counterpoise.kamailio.app import KemiApp, create


def mod_init() -> KemiApp:
    return create()
