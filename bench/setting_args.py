"""``--setting NAME=VALUE`` of the benches: Counterpoise settings other than their defaults."""

from __future__ import annotations

from counterpoise.core.settings import FIELDS, SettingError, kind_of, parse_value


def parse_settings(pairs: list[str]) -> list[tuple[str, object]]:
    """``NAME=VALUE`` pairs as typed settings; exits saying which one is wrong."""
    settings: list[tuple[str, object]] = []
    for name, _, text in (pair.partition("=") for pair in pairs):
        if name not in FIELDS:
            raise SystemExit(f"bench: --setting {name}: no such Counterpoise setting")
        try:
            settings.append((name, parse_value(name, kind_of(name), text, f"--setting {name}")))
        except SettingError as error:
            raise SystemExit(f"bench: {error}") from None
    return settings
