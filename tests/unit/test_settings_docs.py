"""docs/configuration.md and deploy/counterpoise.toml are generated from the settings'
declarations: a setting added, changed or documented without regenerating them fails here."""

import importlib.util

import pytest

from counterpoise import processes
from counterpoise.core.settings import FIELDS

SCRIPT = processes.REPO / "scripts" / "settings_docs.py"


@pytest.fixture(scope="module")
def settings_docs():
    spec = importlib.util.spec_from_file_location("settings_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_files_are_up_to_date(settings_docs) -> None:
    for path, content in settings_docs.outputs().items():
        assert path.read_text() == content, (
            f"{path.relative_to(processes.REPO)} is out of date: run {settings_docs.COMMAND}"
        )


def test_the_configuration_page_has_a_row_per_setting(settings_docs) -> None:
    page = settings_docs.page()
    assert [name for name in FIELDS if f"| `{name}` |" not in page] == []
