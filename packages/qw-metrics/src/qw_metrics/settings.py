"""The plugin's settings in a worker, from the environment."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from qw.errors import ConfigurationError

__all__ = ["DEFAULT_ADDR", "DEFAULT_COUNTS_S", "DEFAULT_PORT", "OFF", "Settings"]

log = logging.getLogger("qw_metrics")

#: ``qw.worker.supervisor.WORKER_INDEX_ENV``, spelled out: importing the
#: supervisor would import the whole worker runtime into every producer.
WORKER_INDEX_ENV = "QW_WORKER_INDEX"

#: The port a worker serves ``/metrics`` on unless ``QW_METRICS_PORT`` says otherwise.
DEFAULT_PORT = 9808
#: The address it binds: every interface, as prometheus_client and exporters do.
DEFAULT_ADDR = "0.0.0.0"
#: Seconds between reads of the store's counts (``QW_METRICS_COUNTS_S``).
DEFAULT_COUNTS_S = 15.0
#: Values of ``QW_METRICS_PORT`` / ``QW_METRICS_COUNTS_S`` that turn the feature off.
OFF = frozenset({"off", "none", "no", "false", "disabled"})


@dataclass(frozen=True, slots=True)
class Settings:
    """``port``: where a worker serves metrics (None: not served; 0: a free port).
    ``addr``: the address bound. ``counts_s``: the sampling period (None: no sampling).
    """

    port: int | None = DEFAULT_PORT
    addr: str = DEFAULT_ADDR
    counts_s: float | None = DEFAULT_COUNTS_S

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, strict: bool = False
    ) -> Settings:
        """Read ``QW_METRICS_PORT``, ``QW_METRICS_ADDR`` and ``QW_METRICS_COUNTS_S``.

        A bad value raises :class:`~qw.errors.ConfigurationError` with
        ``strict``; otherwise it is logged as a warning and the setting is
        off (the port) or its default (the others): an observer must not
        stop a worker.
        """
        env = os.environ if environ is None else environ
        port: int | None = DEFAULT_PORT
        addr = DEFAULT_ADDR
        counts: float | None = DEFAULT_COUNTS_S
        raw = env.get("QW_METRICS_PORT", "").strip()
        if raw:
            try:
                port = _port(raw)
            except ConfigurationError as exc:
                _bad(exc, strict, "metrics are not served over HTTP")
                port = None
        if port:
            port = _child_port(port, env.get(WORKER_INDEX_ENV, ""))
        given = env.get("QW_METRICS_ADDR")
        if given is not None:
            if given.strip():
                addr = given.strip()
            else:
                _bad(
                    ConfigurationError("QW_METRICS_ADDR is set but empty"),
                    strict,
                    f"binding {DEFAULT_ADDR}",
                )
        raw = env.get("QW_METRICS_COUNTS_S", "").strip()
        if raw:
            try:
                counts = _period(raw)
            except ConfigurationError as exc:
                _bad(exc, strict, f"sampling every {DEFAULT_COUNTS_S:g} s")
        return cls(port=port, addr=addr, counts_s=counts)


def _port(raw: str) -> int | None:
    if raw.lower() in OFF:
        return None
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigurationError(
            f"QW_METRICS_PORT must be a port number (0-65535; 0 picks a free one) or 'off', "
            f"not {raw!r}"
        )
    return port


def _child_port(port: int, index: str) -> int:
    """``port`` plus the index of a ``qw worker --processes`` child, so each child has its own."""
    if not index.isdigit() or port + int(index) > 65535:
        return port
    return port + int(index)


def _period(raw: str) -> float | None:
    if raw.lower() in OFF:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if value == 0:
        return None
    if not (0 < value < math.inf):
        raise ConfigurationError(
            f"QW_METRICS_COUNTS_S must be seconds > 0 (or 0 / 'off': no sampling), not {raw!r}"
        )
    return value


def _bad(exc: ConfigurationError, strict: bool, instead: str) -> None:
    if strict:
        raise exc
    log.warning("qw_metrics: %s; %s", exc, instead)
