"""``python -m counterpoise.agent``: the ``counterpoise-agent`` command."""

import sys

from counterpoise.agent.main import main

sys.exit(main())
