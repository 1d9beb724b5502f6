"""Write the settings' reference from their declarations in ``core/settings.py``:
``docs/configuration.md`` (one table per group) and ``deploy/counterpoise.toml`` (every
setting commented out at its default). ``--check`` writes nothing and fails when either is
out of date (``tests/unit/test_settings_docs.py`` runs it).

    .venv/bin/python scripts/settings_docs.py [--check]
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from counterpoise.core.settings import ENV_PREFIX, Settings, as_text, spec_of

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "configuration.md"
EXAMPLE = REPO / "deploy" / "counterpoise.toml"
COMMAND = ".venv/bin/python scripts/settings_docs.py"

PAGE_INTRO = """\
# Configuration

<!-- Generated from kemi/counterpoise/core/settings.py by scripts/settings_docs.py. -->

Every setting is declared once, in `kemi/counterpoise/core/settings.py`, with its bounds;
this page is generated from there (`.venv/bin/python scripts/settings_docs.py`). A setting is
written by its name alone:

- in the config file, `/etc/counterpoise/counterpoise.toml` (or the file
  `COUNTERPOISE_CONFIG` names), as `name = value` at the top level or in its group's table
  (`[failover]`, then `fr_timer_ms = 800`); `deploy/counterpoise.toml` lists them all at
  their defaults;
- as an environment variable `COUNTERPOISE_<NAME>`, which wins over the file
  (`COUNTERPOISE_FR_TIMER_MS=800`; booleans as `on` or `off`);
- the `node` settings but `node_id` also as options of `counterpoise up` (`--shm-mb` for
  `shm_mb`, `--metrics` for `metrics_listen`), which win over both.

An unknown name, a value of the wrong type or one out of its bounds stops `counterpoise up`
with one line naming it. `counterpoise up` passes every value to the Kamailio it starts. On
SIGHUP (`systemctl reload counterpoise`) it re-reads the file and applies the settings marked
runtime at once, keeping the node's learned health and its calls; the others wait for a
restart. The periods of Kamailio's timer processes stay in `kamailio.cfg` (`CP_SYNC_TIMER`,
200 ms; `CP_RELEASE_TIMER`, 20 ms).
"""

EXAMPLE_INTRO = """\
# /etc/counterpoise/counterpoise.toml: the settings of `counterpoise up` (and of the CLI
# and the agent on this host), each commented out at its default. Generated from
# kemi/counterpoise/core/settings.py by scripts/settings_docs.py; docs/configuration.md
# has their bounds. A setting may also go in its group's table: [failover], then
# `fr_timer_ms = 800`. A COUNTERPOISE_<NAME> environment variable wins over this file, and
# an option of `up` (--listen...) over both; an unknown name stops the start with the list
# of valid ones.
#
# `systemctl reload counterpoise` (SIGHUP) applies the settings marked [runtime] at once,
# without dropping the node's learned health or its calls; the others need a restart.
"""


def groups() -> list[tuple[str, Any, str]]:
    """Each group of settings: its name on ``Settings``, its defaults, and its docstring."""
    defaults = Settings()
    found = []
    for group in dataclasses.fields(Settings):
        values = getattr(defaults, group.name)
        doc = " ".join((inspect.getdoc(type(values)) or "").split()).replace("``", "`")
        found.append((group.name, values, doc))
    return found


def kind_text(kind: type) -> str:
    if issubclass(kind, enum.Enum):
        return " or ".join(f"`{member}`" for member in kind)
    return kind.__name__


def cell(value: str) -> str:
    return value.replace("|", "\\|")


def page() -> str:
    """``docs/configuration.md``."""
    parts = [PAGE_INTRO]
    for name, group, doc in groups():
        parts.append(f"\n## {name}\n\n{doc}\n")
        parts.append("\n| setting | variable | type | default | bounds | runtime | meaning | why |")
        parts.append("\n|---|---|---|---|---|---|---|---|")
        for field in dataclasses.fields(group):
            spec = spec_of(field)
            default = as_text(field.default)
            row = (
                f"`{field.name}`",
                f"`{ENV_PREFIX}{field.name.upper()}`",
                kind_text(type(field.default)),
                f"`{default}`" if default else "(empty)",
                ", ".join(rule.text for rule in spec.rules) or "-",
                "yes" if spec.runtime else "no",
                spec.meaning,
                spec.why,
            )
            parts.append("\n| " + " | ".join(cell(part) for part in row) + " |")
        parts.append("\n")
    return "".join(parts)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # enums too
        return json.dumps(str(value))
    return str(value)


def comment(words: str) -> str:
    """``words`` as TOML comment lines."""
    return "".join(f"# {line}\n" for line in textwrap.wrap(words, 94))


def example() -> str:
    """``deploy/counterpoise.toml``."""
    parts = [EXAMPLE_INTRO]
    for name, group, doc in groups():
        parts.append(f"\n\n{comment(f'---- {name}: {doc}')}")
        for field in dataclasses.fields(group):
            spec = spec_of(field)
            runtime = " [runtime]" if spec.runtime else ""
            parts.append(f"\n{comment(spec.meaning + runtime)}{comment(spec.why)}")
            parts.append(f"# {field.name} = {toml_value(field.default)}\n")
    return "".join(parts)


def outputs() -> dict[Path, str]:
    return {PAGE: page(), EXAMPLE: example()}


def main(argv: list[str]) -> int:
    stale = [
        path
        for path, content in outputs().items()
        if not path.exists() or path.read_text() != content
    ]
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(REPO)} is out of date: run {COMMAND}", file=sys.stderr)
        return 1 if stale else 0
    for path, content in outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
