"""``python -m counterpoise.cli``: the ``counterpoise`` command."""

import sys

from counterpoise.cli.main import main

sys.exit(main())
