"""Reading settings mappings (hyperparameters, the config's `data:` section): field types, unknown keys with
did-you-mean hints, range and choice checks. Every error is a ValueError that names the key."""

import dataclasses
import difflib
import types
import typing
from collections.abc import Collection, Iterable, Mapping
from typing import Any

HYPERPARAMETERS = "hyperparameters"

_ITEM_WORDS = {str: "strings", int: "integers"}
_ONE_WORDS = {str: "a string", int: "an integer"}


def key_name(section: str, key: str) -> str:
    """How errors name a key: `hyperparameter 'lr'`, or `data.backend`, `data.trainer.warm_start`."""
    if section == HYPERPARAMETERS:
        return f"hyperparameter {key!r}"
    return f"{section}.{key}"


def reject_unknown(section: str, keys: Iterable[Any], known: Collection[str]) -> None:
    """Raise naming every key not in `known`, with the closest known key as a hint."""
    unknown = sorted(str(key) for key in keys if key not in known)
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    message = f"{section}: unknown key(s) {', '.join(hints)}"
    if not all("did you mean" in hint for hint in hints):
        message += f"; known keys: {', '.join(sorted(known))}"
    raise ValueError(message)


def require(section: str, key: str, condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"{key_name(section, key)} {message}")


def require_choice(section: str, key: str, value: Any, choices: Collection[str]) -> None:
    require(section, key, value in choices, f"must be one of {', '.join(choices)}, got {value!r}")


def coerce(section: str, key: str, kind: Any, value: Any) -> Any:
    """`value` checked against the field type `kind`: bool, int, float (ints accepted), str, tuple[X, ...]
    (from a list) or `X | None`. Nothing else is converted: "256" is not an integer, 1 is not true."""
    name = key_name(section, key)
    if typing.get_origin(kind) in (types.UnionType, typing.Union):
        inner = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        if value is None and len(inner) < len(typing.get_args(kind)):
            return None
        if len(inner) == 1:
            return coerce(section, key, inner[0], value)
        # Several types (e.g. an integer or the word 'auto'): the first that fits; the owner checks the value.
        for option in inner:
            if _is_type(option, value) and option is not float:
                return value
        raise ValueError(f"{name} must be {' or '.join(_ONE_WORDS[option] for option in inner)}, got {value!r}")
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ValueError(f"{name} must be a list of {_ITEM_WORDS[item]}, got {value!r}")
        if not all(_is_type(item, element) for element in value):
            raise ValueError(f"{name} must be a list of {_ITEM_WORDS[item]}, got {value!r}")
        return tuple(value)
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if kind is int and not _is_type(int, value):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if kind is float:
        if not _is_type(float, value):
            raise ValueError(f"{name} must be a number, got {value!r}")
        return float(value)
    if kind is str and not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    if kind not in (bool, int, float, str):
        raise TypeError(f"settings field {key!r} has an unsupported type {kind!r}")
    return value


def _is_type(kind: type, value: Any) -> bool:
    # bool is an int subclass: `num_workers: true` is a mistake, not 1.
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def read_fields(cls: type, section: str, mapping: Mapping[str, Any]) -> dict[str, Any]:
    """The values of the dataclass `cls`'s fields present in `mapping`, each checked against its type."""
    return {
        field.name: coerce(section, field.name, field.type, mapping[field.name])
        for field in dataclasses.fields(cls)
        if field.name in mapping
    }


def parse_settings(cls: type, section: str, mapping: Mapping[str, Any]) -> Any:
    """An instance of the settings dataclass `cls` from the keys of `mapping` that are its fields (the others
    are left to their owners), type-checked, then `validate()`d."""
    settings = cls(**read_fields(cls, section, mapping))
    settings.validate()
    return settings


def field_names(cls: type) -> frozenset[str]:
    return frozenset(field.name for field in dataclasses.fields(cls))
