"""How config.py declares a setting, reads it from the environment and shows it in README.

A setting is a field of the frozen `Settings` dataclass: its annotation is its type, and `setting(...)`
keeps the rest (variable, default, bounds, choices, help) in the field's metadata, so that each is
written once and the reading, the validation and README's table all follow from it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

TABLE_START = "<!-- settings table: generated from cvunet_matting/config.py by `make settings-table` -->"
TABLE_END = "<!-- end of the settings table -->"


@dataclass(frozen=True)
class Computed:
    """A default or bound worked out from the settings declared before it (attributes of its
    argument, with `env`, the environment being read), and the words README shows for it."""

    of: Callable[[SimpleNamespace], Any]
    shown: str


def _flag(raw: str) -> bool:
    return raw.lower() in {"1", "true", "yes", "on"}


def _names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _paths(raw: str) -> tuple[Path, ...]:
    # Separated like PATH (`:`), not by commas: a folder's name may hold a comma.
    return tuple(Path(part.strip()).expanduser().resolve() for part in raw.split(os.pathsep) if part.strip())


def _path(raw: str) -> Path:
    return Path(raw).expanduser()


# What a variable's text becomes for each annotation, and what it should have been when it cannot.
PARSERS: dict[object, tuple[Callable[[str], Any], str]] = {
    str: (str, "text"),
    int: (int, "an integer"),
    float: (float, "a number"),
    bool: (_flag, "a flag"),
    bool | None: (_flag, "a flag"),
    Path: (_path, "a path"),
    tuple[str, ...]: (_names, "a comma-separated list"),
    tuple[Path, ...]: (_paths, "a list of folders"),
}


@dataclass(frozen=True)
class Declared:
    """One setting as declared; `name` and `kind` are filled in from its field by `declarations`."""

    env: str | None  # None: not read, derived from the settings before it
    default: Any  # a value, or a Computed
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | Computed | None = None  # a smaller value is raised to it
    shown: str | None = None  # README's default, where the value alone would mislead
    case: Callable[[str], str] | None = None  # applied before the choices are checked
    zero_is_default: bool = False  # `0` asks for the computed default, as if unset
    name: str = ""
    kind: object = None

    def read(self, env: Mapping[str, str], earlier: SimpleNamespace) -> Any:
        raw = env.get(self.env, "").strip() if self.env else ""
        value = self._parsed(raw) if raw else self._default(earlier)
        if self.zero_is_default and value == 0:
            value = self._default(earlier)
        return self._bounded(value, earlier)

    def _default(self, earlier: SimpleNamespace) -> Any:
        return self.default.of(earlier) if isinstance(self.default, Computed) else self.default

    def _bounded(self, value: Any, earlier: SimpleNamespace) -> Any:
        minimum = self.minimum
        if minimum is None:
            return value
        return max(minimum.of(earlier) if isinstance(minimum, Computed) else minimum, value)

    def _parsed(self, raw: str) -> Any:
        text = self.case(raw) if self.case else raw
        if self.choices and text not in self.choices:
            raise ValueError(f"{self.env} must be one of {', '.join(self.choices)}, got {text!r}")
        parse, noun = PARSERS[self.kind]
        try:
            return parse(text)
        except ValueError:
            raise ValueError(f"{self.env} must be {noun}, got {raw!r}") from None

    def row(self) -> str:
        """This setting's row in README's table."""
        default = self.shown or (self.default.shown if isinstance(self.default, Computed) else _literal(self.default))
        if isinstance(self.minimum, Computed):
            default += f", at least {self.minimum.shown}"
        meaning = self.help.replace("|", r"\|")  # a bare bar would end the cell
        return f"| `{self.env}` | {default} | {meaning} |"


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return f"`{int(value)}`"
    if value in ("", (), None):
        return "(none)"
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def setting(env: str | None, default: Any, help: str, *, secret: bool = False, **options: Any) -> Any:
    """Declare one field of Settings; a secret (a password, a key) stays out of its repr."""
    declared = Declared(env, default, help, **options)
    if isinstance(default, Computed):
        return dataclasses.field(metadata={"setting": declared}, repr=not secret)
    return dataclasses.field(default=default, metadata={"setting": declared}, repr=not secret)


@functools.cache  # read by every load_settings: the class's fields and hints do not change
def declarations(settings_class: type) -> tuple[Declared, ...]:
    """Every setting of `settings_class`, in the order it declares them."""
    kinds = typing.get_type_hints(settings_class)
    return tuple(
        dataclasses.replace(field.metadata["setting"], name=field.name, kind=kinds[field.name])
        for field in dataclasses.fields(settings_class)
    )


def read_settings(declared: Sequence[Declared], env: Mapping[str, str]) -> dict[str, Any]:
    """Each setting's value from `env`, in declaration order: a computed one sees those before it."""
    earlier = SimpleNamespace(env=env)
    for one in declared:
        setattr(earlier, one.name, one.read(env, earlier))
    return {one.name: getattr(earlier, one.name) for one in declared}


def table(declared: Sequence[Declared]) -> list[str]:
    """README's settings table: a row for each variable (derived settings have none)."""
    return ["| variable | default | meaning |", "|---|---|---|", *(one.row() for one in declared if one.env)]


def _around_table(readme: str) -> tuple[str, str, str]:
    """README's text before the settings table, the table, and the text after it."""
    if TABLE_START not in readme or TABLE_END not in readme:
        raise ValueError(f"README lacks the settings table's markers: {TABLE_START} ... {TABLE_END}")
    head, rest = readme.split(TABLE_START, 1)
    inside, tail = rest.split(TABLE_END, 1)
    return head, inside, tail


def table_in(readme: str) -> list[str]:
    """The table between README's markers, as it stands."""
    return _around_table(readme)[1].strip("\n").split("\n")


def with_table(readme: str, rows: list[str]) -> str:
    """README's text with `rows` between the markers, in place of what was there."""
    head, _, tail = _around_table(readme)
    return "\n".join([head + TABLE_START, *rows, TABLE_END + tail])
