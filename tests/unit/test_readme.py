"""The README documents every knob: a setting added without a line there fails here."""

import dataclasses

from counterpoise import processes
from counterpoise.core.settings import Settings


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (processes.REPO / "README.md").read_text()
    missing = [f.name for f in dataclasses.fields(Settings) if f"| `{f.name}` |" not in readme]
    assert missing == []
