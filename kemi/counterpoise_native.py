"""Entry point app_python3 loads in a native Kamailio config that embeds Counterpoise
(``embed/counterpoise.cfg``: ``modparam("app_python3", "load", CP_SCRIPT)``).

``mod_init`` makes the object whose ``cp_*`` methods the config's ``python_exec`` calls.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from counterpoise.kamailio.embed import Embedded


def mod_init() -> Embedded:
    return Embedded(native=True)
