"""Every development task of qw. ``python3 -m nox -l`` lists the sessions.

``python3 -m nox`` with no arguments runs what CI runs (``nox.options.sessions``):
lint, typecheck, the unit tests on 3.11, the storage contract on 3.12 for
every backend, the out-of-tree example backend proved with the kit, the
FastAPI example's API tests, qw-django on a real Django project, the metrics
and tracing plugins, the dashboard (with its tests in headless Chromium), and
the benchmark harness's own tests (not the benchmark itself).
``nox -s "contract-3.12(redis)"`` runs one backend's contract.

Server URLs come from ``QW_TEST_POSTGRES_URL``, ``QW_TEST_REDIS_URL`` and
``QW_TEST_MONGODB_URL`` (this machine's defaults otherwise); a backend named in
``QW_REQUIRE_BACKENDS`` fails instead of skipping when its server or its
package is missing.
"""

from __future__ import annotations

import glob
import os
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PACKAGES = ROOT / "packages"
PYTHONS = ["3.11", "3.12", "3.13"]
#: memory and sqlite ship inside qw-core; the others are wheels of their own.
BUILTIN_BACKENDS = ["memory", "sqlite"]
BACKENDS = [*BUILTIN_BACKENDS, "postgres", "redis", "mongodb"]
SERVER_PACKAGES = [f"qw-{name}" for name in BACKENDS if name not in BUILTIN_BACKENDS]
SERVICE_ENV = (
    "QW_TEST_POSTGRES_URL",
    "QW_TEST_REDIS_URL",
    "QW_TEST_MONGODB_URL",
    "QW_REQUIRE_BACKENDS",
    "QW_REQUIRE_BROWSER",
)
# Pinned so that lint and typecheck verdicts do not change under our feet.
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "venv"
# Editable installs point into the work tree, so a kept venv stays current;
# each run still re-runs its installs, which are no-ops when nothing changed.
nox.options.reuse_venv = "yes"
nox.options.sessions = [
    "lint",
    "typecheck",
    "unit-3.11",
    "contract-3.12",
    "example-3.11",
    "fastapi-3.12",
    "django-3.12",
    "observability-3.11",
    "dashboard-3.11",
    "bench-harness",
]


def _put_pyenv_pythons_on_path() -> None:
    """Let nox find python3.11/3.12/3.13 from pyenv without pyenv being set up.

    nox looks interpreters up on PATH by name; pyenv's shims only answer for
    the versions a user selected, so the versions' own bin dirs go first.
    """
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found = sorted(glob.glob(str(root / "versions" / "3.1[123].*" / "bin")), reverse=True)
    path = os.environ.get("PATH", "").split(os.pathsep)
    extra = [d for d in found if d not in path]
    if extra:
        os.environ["PATH"] = os.pathsep.join([*extra, *path])


_put_pyenv_pythons_on_path()


def _existing(*relative: str) -> list[str]:
    return [p for p in relative if (ROOT / p).exists()]


def _service_env(session: nox.Session) -> dict[str, str]:
    env = {name: os.environ[name] for name in SERVICE_ENV if name in os.environ}
    for name, value in env.items():
        session.log(f"{name}={value}")
    return env


def _required(backend: str) -> bool:
    names = {n.strip() for n in os.environ.get("QW_REQUIRE_BACKENDS", "").split(",")}
    return backend in names or "all" in names


def _install_packages(session: nox.Session, *names: str) -> None:
    """Install workspace packages editable, with their ``test`` extra when they have one."""
    # The build backend in the venv lets pip build the editables without a
    # fresh isolated build environment per package per run (hatchling needs
    # editables for packages listed explicitly).
    session.install("hatchling>=1.21", "editables>=0.3")
    specs: list[str] = []
    for name in names:
        directory = PACKAGES / name
        meta = tomllib.loads((directory / "pyproject.toml").read_text())
        extras = meta.get("project", {}).get("optional-dependencies", {})
        specs += ["-e", f"{directory}[test]" if "test" in extras else str(directory)]
    session.install("--no-build-isolation", *specs)


def _package_dirs() -> list[str]:
    return sorted(p.name for p in PACKAGES.iterdir() if (p / "pyproject.toml").is_file())


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict (config in pyproject.toml) over every package's src."""
    packages = _package_dirs()
    session.install(MYPY)
    _install_packages(session, *packages)
    session.run("mypy", *[f"packages/{name}/src" for name in packages], "examples/qw-toyfile/src")


@nox.session(python=PYTHONS)
def unit(session: nox.Session) -> None:
    """The core's unit and runtime tests and the testkit's self-tests.

    The runtime tests run workers on memory and sqlite, and on PostgreSQL and
    Redis when their servers answer (required where QW_REQUIRE_BACKENDS says).
    """
    paths = _existing(
        "packages/qw-core/tests/unit",
        "packages/qw-testkit/tests",
        "packages/qw-core/tests/runtime",
    )
    if not paths:
        session.error("no unit test directories found")
    # The runtime tests run the worker on every server backend too (and the
    # registry tests read the aliases the backends' metadata announces).
    _install_packages(session, "qw-core", "qw-testkit", *SERVER_PACKAGES)
    session.run("pytest", *paths, *session.posargs, env=_service_env(session))


@nox.session(python=PYTHONS)
@nox.parametrize("backend", BACKENDS, ids=BACKENDS)
def contract(session: nox.Session, backend: str) -> None:
    """The storage contract (qw_testkit) against one backend, on its real store."""
    if backend in BUILTIN_BACKENDS:
        packages = ["qw-core", "qw-testkit"]
        target = f"packages/qw-core/tests/contract/test_{backend}_contract.py"
    else:
        packages = ["qw-core", "qw-testkit", f"qw-{backend}"]
        target = f"packages/qw-{backend}/tests"
    missing = [f"packages/{p}" for p in packages if not (PACKAGES / p).is_dir()]
    if not (ROOT / target).exists():
        missing.append(target)
    if missing:
        reason = f"{backend}: {', '.join(missing)} does not exist yet"
        if _required(backend):
            session.error(f"{reason}, and QW_REQUIRE_BACKENDS requires {backend}")
        session.skip(reason)
    _install_packages(session, *packages)
    session.run("pytest", target, *session.posargs, env=_service_env(session))


@nox.session(python=PYTHONS)
def example(session: nox.Session) -> None:
    """The out-of-tree toy backend, proved as a third party would prove theirs.

    A fresh venv gets plain (not editable) installs of qw-core, qw-testkit and
    examples/qw-toyfile, then runs the kit with plain pytest, and checks that
    ``qw backends`` finds the toy through its entry point.
    """
    toy = ROOT / "examples" / "qw-toyfile"
    session.install(str(PACKAGES / "qw-core"), str(PACKAGES / "qw-testkit"), f"{toy}[test]")
    session.run("qw", "backends")
    session.run(
        "python",
        "-c",
        "import sys, qw.registry as r; sys.exit(0 if 'toyfile' in r.discover() else 'no toyfile')",
    )
    session.run("pytest", str(toy / "tests"), *session.posargs)


@nox.session(python=PYTHONS)
def fastapi(session: nox.Session) -> None:
    """The FastAPI example (examples/fastapi-app): its API through an ASGI client.

    Against the real PostgreSQL and Redis, with a real worker running the
    tasks (required where QW_REQUIRE_BACKENDS says).
    """
    _install_packages(session, "qw-core", "qw-testkit", "qw-postgres", "qw-redis")
    session.install("--no-build-isolation", "-e", f"{ROOT / 'examples' / 'fastapi-app'}[test]")
    session.run("pytest", "examples/fastapi-app/tests", *session.posargs, env=_service_env(session))


@nox.session(python=["3.12", "3.13"])
def django(session: nox.Session) -> None:
    """qw-django: a real Django project on SQLite and PostgreSQL, with ``manage.py qw_worker``.

    Django 6 needs Python 3.12+. PostgreSQL is required where QW_REQUIRE_BACKENDS says.
    """
    _install_packages(session, "qw-core", "qw-postgres", "qw-django")
    session.run("pytest", "packages/qw-django/tests", *session.posargs, env=_service_env(session))


@nox.session(python=PYTHONS)
def observability(session: nox.Session) -> None:
    """qw-metrics (Prometheus) and qw-tracing (OpenTelemetry): real workers on real stores."""
    _install_packages(
        session, "qw-core", "qw-testkit", "qw-postgres", "qw-redis", "qw-metrics", "qw-tracing"
    )
    env = _service_env(session)
    # One pytest run per package: each has a conftest of its own.
    for package in ("qw-metrics", "qw-tracing"):
        session.run("pytest", f"packages/{package}/tests", *session.posargs, env=env)


@nox.session(python=PYTHONS)
def dashboard(session: nox.Session) -> None:
    """qw-dashboard: its pages over ASGI, then end to end in Debian's headless Chromium.

    The browser tests use /usr/bin/chromium and /usr/bin/chromedriver (Debian's
    chromium and chromium-driver; nothing is downloaded) and skip, saying so,
    when they are missing, unless QW_REQUIRE_BROWSER=1 (CI) makes that a failure.
    """
    _install_packages(session, "qw-core", "qw-testkit", "qw-postgres", "qw-redis", "qw-dashboard")
    session.install("selenium>=4.20")
    env = _service_env(session)
    for name in ("QW_CHROMIUM", "QW_CHROMEDRIVER"):
        if name in os.environ:
            env[name] = os.environ[name]
    # Selenium Manager must never download a browser or a driver.
    env["SE_OFFLINE"] = "true"
    session.run("pytest", "packages/qw-dashboard/tests", *session.posargs, env=env)


# -- benchmarks -----------------------------------------------------------
# The `bench` and `bench-quick` sessions (bench/ harness) go here.

BENCH_PACKAGES = ["qw-core", "qw-postgres", "qw-redis", "qw-metrics", "qw-tracing"]


def _bench(session: nox.Session, *args: str) -> None:
    """Install qw's packages and the peers (bench/requirements.txt), then run bench/run.py.

    qw-mongodb is installed only when ``QW_BENCH_MONGODB_URL`` names a server.
    """
    session.install("-r", "bench/requirements.txt", "hatchling>=1.21", "editables>=0.3")
    names = BENCH_PACKAGES + (["qw-mongodb"] if os.environ.get("QW_BENCH_MONGODB_URL") else [])
    editables: list[str] = []
    for name in names:
        if (PACKAGES / name / "pyproject.toml").is_file():
            editables += ["-e", str(PACKAGES / name)]
    session.install("--no-build-isolation", *editables)
    env = {"PYTHONPATH": str(ROOT)}
    for name in ("QW_BENCH_POSTGRES_URL", "QW_BENCH_REDIS_URL", "QW_BENCH_MONGODB_URL"):
        if name in os.environ:
            env[name] = os.environ[name]
    session.run("python", "-m", "bench.run", *args, *session.posargs, env=env)


@nox.session(name="bench-harness", python="3.11")
def bench_harness(session: nox.Session) -> None:
    """The harness's own tests: tallies, sweeps, goals, reports, small real qw drains on SQLite.

    No peer is installed: what the tests need of one, they build themselves.
    """
    _install_packages(session, *BENCH_PACKAGES)
    session.install("pytest>=8")
    session.run("pytest", "bench/tests", *session.posargs, env={"PYTHONPATH": str(ROOT)})


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """The full benchmark: every system at each setting of its sweep, and the bare-store cycle.

    Results in bench/results/bench.*.

    Extra arguments go to bench/run.py, e.g. ``nox -s bench -- --n 1000000``.
    """
    _bench(session)


@nox.session(name="bench-quick", python="3.11")
def bench_quick(session: nox.Session) -> None:
    """A smoke run of the benchmark (small N, concurrency 1 and 4): a few minutes."""
    _bench(session, "--quick")
