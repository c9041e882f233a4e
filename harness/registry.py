"""Name → implementation registries for methods, datasets and metrics.

A new method, dataset or metric registers itself with a decorator in its own module; the harness imports
the built-in modules lazily on first lookup (`_BUILTIN_MODULES`), and an out-of-tree plugin registers by
being imported (list it under `plugins:` in the config). Lookups of unknown names suggest the closest
valid ones, so a typo in a sweep fails before any work starts.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown registry name; the message lists the closest valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """Names → classes of one kind. `base` ("module:Class", imported on first registration so that this
    module imports none of them) is the class every entry must derive from; the decorator's name is set on
    the class as its `name_attribute` (`name` for methods and datasets, `id` for metrics), so the two never
    disagree and a class need not repeat it."""

    def __init__(self, kind: str, builtin_packages: tuple[str, ...], base: str, name_attribute: str = "name") -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._builtin_packages = builtin_packages
        self._loaded = False
        self._base = base
        self.name_attribute = name_attribute

    def base(self) -> type:
        module, _, cls = self._base.partition(":")
        return getattr(importlib.import_module(module), cls)

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            base = self.base()
            if not (isinstance(obj, type) and issubclass(obj, base)):
                raise TypeError(f"{self.kind} {name!r}: {obj!r} is not a subclass of {base.__module__}.{base.__qualname__}")
            declared = obj.__dict__.get(self.name_attribute)
            if declared not in (None, "", name):
                raise ValueError(f"{self.kind} {name!r}: class {obj.__qualname__} declares "
                                 f"{self.name_attribute}={declared!r}; the registered name is its {self.name_attribute}")
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            setattr(obj, self.name_attribute, name)
            self._entries[name] = obj
            return obj

        return decorator

    def _load_builtins(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for package_name in self._builtin_packages:
            package = importlib.import_module(package_name)
            for info in pkgutil.iter_modules(package.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{package_name}.{info.name}")

    def get(self, name: str) -> T:
        self._load_builtins()
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Valid {self.kind}s: {', '.join(sorted(self._entries))}"
            ) from None

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: Any) -> bool:
        self._load_builtins()
        return name in self._entries


METHODS: Registry[Any] = Registry("method", ("methods",), "harness.method:EditMethod")
DATASETS: Registry[Any] = Registry("dataset", ("harness.data",), "harness.data.base:DatasetLoader")
METRICS: Registry[Any] = Registry("metric", ("harness.metrics",), "harness.metrics.base:Metric", "id")
