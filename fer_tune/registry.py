"""A name -> constructor registry (the timm pattern) for models, augmentations,
optimizers and LR schedules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from fer_tune.errors import FerTuneError

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """`register` under a unique name, `get` by name (unknown names list the valid ones), `names` lists them."""

    def __init__(self, kind: str):
        self.kind = kind  # "model", "augmentation", ... used in error messages
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def decorator(fn: T) -> T:
            key = name or fn.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = fn
            return fn

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise FerTuneError(f"unknown {self.kind} {name!r}; expected one of: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
