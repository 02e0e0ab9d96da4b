"""Finding backends: entry points, lazily, by name or URL scheme.

Each installed distribution announces its backends in the ``qw.backends``
entry-point group without anything being imported. Asking for a name loads
that one entry point, registers its module with pluggy and collects the
classes its :func:`~qw.plugin.spec.qw_register_backends` returns. Two
distributions announcing one name is refused, naming both, rather than
letting either win silently.

A distribution may also announce extra URL schemes for its backends in the
``qw.url_schemes`` group (entry-point name = the scheme, value = the backend
name), so ``pg://`` or a third party's ``toy+tls://`` resolves from metadata
alone, importing nothing. Two distributions claiming one scheme, or a scheme
that is another distribution's backend name, is refused the same way.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, cast

from qw.display import redact_url
from qw.errors import BackendConflict, BackendNotFound, BackendUnavailable, ConfigurationError

if TYPE_CHECKING:
    import pluggy

    from qw.contract import Backend

__all__ = [
    "BACKEND_GROUP",
    "URL_SCHEME_GROUP",
    "BackendEntry",
    "backend_name_for",
    "discover",
    "load_backend",
]

BACKEND_GROUP = "qw.backends"
URL_SCHEME_GROUP = "qw.url_schemes"
#: What a URL scheme (RFC 3986) may hold, lower-cased.
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")

#: The schemes this project's distributions announce, for the install hint
#: only: when the distribution is missing, no metadata says what they mean.
_SHIPPED_SCHEMES: dict[str, str] = {
    "pg": "postgres",
    "postgresql": "postgres",
    "mongo": "mongodb",
    "mongodb+srv": "mongodb",
    "rediss": "redis",
    "redis+cluster": "redis",
    "rediss+cluster": "redis",
}
#: What to install for the backends this project ships.
INSTALL_HINTS: dict[str, str] = {
    "postgres": "qw-postgres",
    "redis": "qw-redis",
    "mongodb": "qw-mongodb",
}


@dataclass(frozen=True, slots=True)
class BackendEntry:
    """One announced backend, known without importing it."""

    name: str
    distribution: str
    version: str
    target: str

    @classmethod
    def from_entry_point(cls, ep: EntryPoint) -> BackendEntry:
        dist = ep.dist
        return cls(
            name=ep.name,
            distribution=dist.name if dist is not None else "<unknown>",
            version=dist.version if dist is not None else "",
            target=ep.value,
        )


def backend_name_for(url_or_name: str) -> str:
    """The backend name a URL (by its scheme) or a bare name or alias means."""
    scheme, sep, _ = url_or_name.partition("://")
    if not sep and ":" in url_or_name:
        raise ConfigurationError(f"not a backend URL or name: {redact_url(url_or_name)!r}")
    name = scheme.lower()
    if not name:
        raise ConfigurationError(f"no backend scheme in {redact_url(url_or_name)!r}")
    if not _SCHEME.fullmatch(name):
        # Not a scheme ("user:pw@host" given without one): never echo it raw.
        raise ConfigurationError(f"not a backend URL or name: {redact_url(url_or_name)!r}")
    return _scheme_target(name)


def url_schemes() -> dict[str, list[BackendEntry]]:
    """Every announced extra URL scheme with the entries claiming it (no imports).

    An entry's ``target`` is the backend name the scheme means.
    """
    found: dict[str, list[BackendEntry]] = {}
    for ep in entry_points(group=URL_SCHEME_GROUP):
        entry = BackendEntry.from_entry_point(ep)
        claims = found.setdefault(ep.name.lower(), [])
        if entry not in claims:
            claims.append(entry)
    return dict(sorted(found.items()))


def _scheme_target(scheme: str) -> str:
    """The backend name ``scheme`` means: its own, or the one a distribution maps it to."""
    claims = {
        BackendEntry.from_entry_point(ep)
        for ep in entry_points(group=URL_SCHEME_GROUP)
        if ep.name.lower() == scheme
    }
    if not claims:
        return scheme
    if len(claims) > 1:
        claimants = " and ".join(
            f"{e.distribution} {e.version} (for {e.target!r})"
            for e in sorted(claims, key=lambda e: e.distribution)
        )
        raise BackendConflict(f"URL scheme {scheme!r} is claimed by {claimants}; uninstall one")
    (claim,) = claims
    rivals = sorted(
        {
            ep.dist.name if ep.dist is not None else "<unknown>"
            for ep in entry_points(group=BACKEND_GROUP, name=scheme)
        }
        - {claim.distribution}
    )
    if rivals:
        raise BackendConflict(
            f"URL scheme {scheme!r} is claimed by {claim.distribution} {claim.version} "
            f"(for {claim.target!r}) and is the name of a backend of {' and '.join(rivals)}; "
            "uninstall one"
        )
    return claim.target


def discover() -> dict[str, list[BackendEntry]]:
    """Every announced backend name with the entries claiming it (no imports)."""
    found: dict[str, list[BackendEntry]] = {}
    for ep in entry_points(group=BACKEND_GROUP):
        entry = BackendEntry.from_entry_point(ep)
        claims = found.setdefault(ep.name, [])
        if entry not in claims:
            claims.append(entry)
    return dict(sorted(found.items()))


class _Registry:
    """Loaded backend classes, keyed by their own ``name``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pm: pluggy.PluginManager | None = None
        self._classes: dict[str, type[Backend]] = {}

    def _plugins(self) -> pluggy.PluginManager:
        """The plugin manager, made on the first load (under the lock): not at ``import qw``."""
        if self._pm is None:
            import pluggy

            from qw.plugin import NAME, spec

            pm = pluggy.PluginManager(NAME)
            pm.add_hookspecs(spec)
            self._pm = pm
        return self._pm

    def load(self, name: str) -> type[Backend]:
        with self._lock:
            if name in self._classes:
                return self._classes[name]
            entry, ep = _single_entry(name)
            pm = self._plugins()
            try:
                module = ep.load()
                plugin_name = f"{entry.distribution}:{name}"
                if not pm.has_plugin(plugin_name):
                    pm.register(module, name=plugin_name)
                impls = [
                    impl
                    for impl in pm.hook.qw_register_backends.get_hookimpls()
                    if impl.plugin_name == plugin_name
                ]
                classes: list[type[Backend]] = []
                for impl in impls:
                    classes.extend(cast("list[type[Backend]]", impl.function()))
            except Exception as exc:
                raise BackendUnavailable(
                    f"backend {name!r} from {entry.distribution} {entry.version} failed to "
                    f"load: {exc!r}"
                ) from exc
            for cls in classes:
                if cls.name in self._classes and self._classes[cls.name] is not cls:
                    raise BackendConflict(
                        f"backend name {cls.name!r} is registered twice, by "
                        f"{self._classes[cls.name].__module__} and {cls.__module__}"
                    )
                self._classes[cls.name] = cls
            if name not in self._classes:
                raise BackendUnavailable(
                    f"{entry.distribution} announces backend {name!r} at {entry.target}, "
                    f"but its qw_register_backends returned no class named {name!r}"
                )
            return self._classes[name]


def _single_entry(name: str) -> tuple[BackendEntry, EntryPoint]:
    eps = list(entry_points(group=BACKEND_GROUP, name=name))
    entries = {BackendEntry.from_entry_point(ep): ep for ep in eps}
    if not entries:
        hint = INSTALL_HINTS.get(_SHIPPED_SCHEMES.get(name, name))
        install = f": pip install {hint}" if hint else ""
        known = ", ".join(discover()) or "none"
        raise BackendNotFound(
            f"no backend named {name!r} is installed{install} (installed: {known})"
        )
    if len(entries) > 1:
        claimants = " and ".join(f"{e.distribution} {e.version} ({e.target})" for e in entries)
        raise BackendConflict(f"backend name {name!r} is claimed by {claimants}; uninstall one")
    return next(iter(entries.items()))


_registry = _Registry()


def load_backend(name_or_url: str) -> type[Backend]:
    """The backend class for a name, alias or URL; imports only that backend."""
    return _registry.load(backend_name_for(name_or_url))
