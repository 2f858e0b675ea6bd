"""The vocabulary of the config schemas: a setting's default, its allowed values and its one-line doc.

A schema field is ``name: type = setting(default, Allowed..., doc="...")``. OmegaConf checks the
type when the config is composed; ``config/check.py`` checks the ``Allowed`` part (ranges,
enumerations, lists) and unknown keys once, before torch loads, and every refusal is one
sentence built from the same text: ``data.batch_size=0 is not allowed; expected an integer >= 1``.
Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field, is_dataclass
from typing import Any

from omegaconf import OmegaConf


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plain(value: Any) -> Any:
    """``value`` as plain Python (a config list or dict becomes a list or dict)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


class Allowed:
    """What a setting accepts: ``text`` for the error sentence and the docs, ``accepts`` for the check."""

    def __init__(self, text: str, accepts: Callable[[Any], bool]) -> None:
        self.text = text
        self._accepts = accepts

    def accepts(self, value: Any) -> bool:
        return self._accepts(plain(value))

    def choices(self) -> tuple[Any, ...]:
        """The values a did-you-mean may suggest (none for a range)."""
        return ()


class Either(Allowed):
    def __init__(self, *options: Allowed, text: str | None = None) -> None:
        joined = ", ".join(o.text for o in options[:-1]) + f" or {options[-1].text}"
        super().__init__(text or joined, lambda v: any(option.accepts(v) for option in options))
        self.options = options

    def choices(self) -> tuple[Any, ...]:
        return tuple(choice for option in self.options for choice in option.choices())


class OneOf(Allowed):
    """One of a few values, compared with their type (``1`` is not ``true``)."""

    def __init__(self, *values: Any) -> None:
        super().__init__(" | ".join(_shown(v) for v in values), lambda v: any(_same(v, c) for c in values))
        self.values = values

    def choices(self) -> tuple[Any, ...]:
        return self.values


class Range(Allowed):
    """A number (an integer with ``integer=True``) from ``low`` to ``high``; ``open_low`` / ``open_high``
    exclude the bound itself."""

    def __init__(
        self,
        low: float | None = None,
        high: float | None = None,
        *,
        integer: bool = False,
        open_low: bool = False,
        open_high: bool = False,
        text: str | None = None,
    ) -> None:
        kind = "an integer" if integer else "a number"
        if low is not None and high is not None:
            described = f"{kind} in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        elif low is not None:
            described = f"{kind} {'>' if open_low else '>='} {low:g}"
        elif high is not None:
            described = f"{kind} {'<' if open_high else '<='} {high:g}"
        else:
            described = kind

        def accepts(value: Any) -> bool:
            if not (is_int(value) if integer else is_number(value)):
                return False
            above = low is None or (value > low if open_low else value >= low)
            below = high is None or (value < high if open_high else value <= high)
            return above and below

        super().__init__(text or described, accepts)


def Integer(low: int | None = None, high: int | None = None, text: str | None = None) -> Range:  # noqa: N802
    """An integer from ``low`` to ``high`` (inclusive)."""
    return Range(low, high, integer=True, text=text)


class ListOf(Allowed):
    """A list whose items each pass ``item``: exactly ``length`` of them, ``at_least`` of them, in
    ascending order (``sorted_``), or a subset of ``item``'s choices."""

    def __init__(
        self,
        item: Allowed,
        *,
        length: int | None = None,
        at_least: int = 0,
        sorted_: bool = False,
        text: str | None = None,
    ) -> None:
        def accepts(value: Any) -> bool:
            return (
                isinstance(value, list)
                and (length is None or len(value) == length)
                and len(value) >= at_least
                and all(item.accepts(v) for v in value)
                and (not sorted_ or value == sorted(value))
            )

        count = f"{length} " if length is not None else ""
        super().__init__(text or f"a list of {count}{item.text}", accepts)


class Text(Allowed):
    """A non-empty string (``what`` names it: a folder path, a model name)."""

    def __init__(self, what: str, *, ends_with: str | None = None) -> None:
        super().__init__(
            what, lambda v: isinstance(v, str) and v.strip() != "" and (ends_with is None or v.endswith(ends_with))
        )


class Mapping(Allowed):
    """A dictionary (``what`` says of what)."""

    def __init__(self, what: str) -> None:
        super().__init__(what, lambda v: isinstance(v, dict))


def setting(default: Any, allowed: Allowed | None = None, *, doc: str, optional: bool = False) -> Any:
    """A schema field: its default, what it accepts (``optional``: also null) and its one-line doc."""
    if optional and allowed is not None:
        allowed = Either(allowed, OneOf(None), text=f"{allowed.text}, or null")
    metadata = {"allowed": allowed, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default.copy(), metadata=metadata)
    if is_dataclass(default):
        return field(default_factory=type(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _same(value: Any, choice: Any) -> bool:
    return value == choice and type(value) is type(choice)


def _shown(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
