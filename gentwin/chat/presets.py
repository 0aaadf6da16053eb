"""Presets: named sets of options, kept in a JSON file the user owns.

Cohere's Generate API stored presets on its servers; its Chat API dropped them and asks users to "create and
store presets on your end". gentwin does that: `{"name": {"temperature": 0.2, "max_tokens": 50, ...}}` in
$XDG_CONFIG_HOME/gentwin/presets.json (~/.config/gentwin/presets.json when XDG_CONFIG_HOME is unset), or
any path given. A preset holds options (gentwin.chat.options) and, for generate() only, a "prompt".
Options given in a call override the preset's, as in Cohere's Generate.

The file is written whole to a temporary file that then replaces it, readable by its owner only.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from gentwin.chat import options as chat_options
from gentwin.errors import GentwinError

PROMPT = "prompt"  # the one preset entry that is not an option


class PresetError(GentwinError, ValueError):
    """A preset is unknown, malformed, or its file cannot be read or written."""


def default_path() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config_home) / "gentwin" / "presets.json"


class PresetStore:
    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_path()

    def names(self) -> list[str]:
        return sorted(self._read())

    def get(self, name: str) -> dict:
        """The preset's entries: options by name, and maybe a "prompt"."""
        presets = self._read()
        if name not in presets:
            raise PresetError(f"no preset named {name!r} in {self.path} (presets there: "
                              f"{', '.join(sorted(presets)) or 'none'})")
        return dict(presets[name])

    def save(self, name: str, **entries) -> None:
        """Store ENTRIES (options, and maybe a prompt) under NAME, replacing a preset of that name."""
        if not isinstance(name, str) or not name:
            raise PresetError(f"a preset's name must be a non-empty string, got {name!r}")
        check_entries(name, entries)
        presets = self._read()
        presets[name] = entries
        self._write(presets)

    def delete(self, name: str) -> None:
        presets = self._read()
        if name not in presets:
            raise PresetError(f"no preset named {name!r} in {self.path}")
        del presets[name]
        self._write(presets)

    def _read(self) -> dict:
        if not self.path.exists():
            return {}
        try:
            presets = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PresetError(f"cannot read presets from {self.path}: {error}") from None
        if not isinstance(presets, dict) or not all(isinstance(entry, dict) for entry in presets.values()):
            raise PresetError(f"{self.path} must hold a JSON object of presets, each an object of options")
        return presets

    def _write(self, presets: dict) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".presets-")
            with os.fdopen(descriptor, "w", encoding="utf-8") as f:  # mkstemp makes it readable by its owner only
                json.dump(presets, f, indent=2, sort_keys=True)
            os.replace(temporary, self.path)
        except OSError as error:
            raise PresetError(f"cannot write presets to {self.path}: {error}") from None


def check_entries(name: str, entries: dict) -> None:
    """Raise naming the preset when an entry is not an option, or has a bad value."""
    prompt = entries.get(PROMPT)
    if prompt is not None and not isinstance(prompt, str):
        raise PresetError(f"preset {name!r}: prompt must be a string, got {prompt!r}")
    try:
        chat_options.resolve({key: value for key, value in entries.items() if key != PROMPT},
                             chat_options.CHAT_DEFAULTS)
    except (TypeError, ValueError) as error:
        raise PresetError(f"preset {name!r}: {error}") from None
