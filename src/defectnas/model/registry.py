"""A tiny registry of interchangeable blocks, in the style of timm.

Why: the architecture search chooses, per layer, a token mixer and a feed-forward block by
name. Keeping every choice in a registry means adding an op is one decorated class, the search
space is read off the registry, and a typo fails with the list of valid names.
"""

from __future__ import annotations

from typing import Callable

from ..errors import ConfigError


class Registry:
    """Maps names to classes that share one constructor contract."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type], type]:
        def decorator(cls: type) -> type:
            if name in self._classes:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._classes[name] = cls
            cls.op_name = name
            return cls

        return decorator

    def get(self, name: str) -> type:
        try:
            return self._classes[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}") from None

    def create(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: str) -> bool:
        return name in self._classes
