"""Build step pyproject.toml cannot say: copy the files ``counterpoise up`` starts Kamailio
and Redis with (``kamailio.cfg``, the embedding include and its Python entry script,
``redis/redis.conf``, ``redis/users.acl``) into the package, so a wheel works from any folder while the repository
keeps them at the top (``counterpoise/assets.py`` finds them in either place)."""

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).parent / "kemi"))
from counterpoise.assets import SHIPPED  # one list for the build and the runtime


class BuildWithAssets(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "counterpoise" / "_assets"
        target.mkdir(parents=True, exist_ok=True)
        for name, source in SHIPPED.items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(__file__).parent / source, target / name)


setup(cmdclass={"build_py": BuildWithAssets})
