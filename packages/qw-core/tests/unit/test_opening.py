"""qw.open: the environment and the embedded default, and what it refuses."""

from __future__ import annotations

import pytest

import qw


def test_an_empty_namespace_is_refused_not_defaulted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QW_NAMESPACE", "fromenv")
    with pytest.raises(qw.InvalidName):
        qw.open("memory://", namespace="")


def test_namespace_comes_from_the_environment_when_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QW_NAMESPACE", "fromenv")
    with qw.open("memory://") as client:
        assert client.namespace == "fromenv"


def test_default_namespace_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QW_NAMESPACE", raising=False)
    with qw.open("memory://") as client:
        assert client.namespace == "default"


def test_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QW_URL", "memory://fromenv")
    with qw.open(namespace="acme") as client:
        assert client.backend.name == "memory"
