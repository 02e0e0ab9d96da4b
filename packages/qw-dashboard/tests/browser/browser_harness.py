"""Real processes and a real browser for the dashboard's end-to-end tests and screenshots.

Everything here is real: ``qw dashboard`` and ``qw worker`` run as child
processes of this one, on a real store, and the browser is Debian's
Chromium driven through its own chromedriver. Selenium is pointed at both
binaries, so Selenium Manager never looks for (or downloads) a browser.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

import e2e_app

import qw

if TYPE_CHECKING:
    from selenium.webdriver.common.alert import Alert
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

HERE = Path(__file__).resolve().parent
CHROMIUM = Path(os.environ.get("QW_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("QW_CHROMEDRIVER", "/usr/bin/chromedriver"))
DEBIAN_PACKAGES = ("chromium", "chromium-driver")
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
WINDOW = (1280, 900)
#: What ``qw dashboard`` prints once it accepts connections.
SERVING = re.compile(r"qw dashboard: serving on (http://\S+?)/?\s*$")
#: How often the pages under test refresh their live regions (ms).
REFRESH_MS = 300

T = TypeVar("T")


def browser_required() -> bool:
    """Whether a missing browser fails the tests instead of skipping them (CI sets it)."""
    return os.environ.get("QW_REQUIRE_BROWSER", "") not in ("", "0")


def browser_missing() -> str | None:
    """Why no browser test can run here (None when Chromium and its driver are installed)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the Python package selenium")
    if not missing:
        return None
    return (
        f"{', '.join(missing)} not found: install Debian's packages "
        f"{' and '.join(DEBIAN_PACKAGES)} (apt-get install -y {' '.join(DEBIAN_PACKAGES)})"
        " and selenium from PyPI"
    )


def chrome(profile: Path, window: tuple[int, int] = WINDOW) -> WebDriver:
    """Headless Chromium with a fresh profile in ``profile``, via the system chromedriver."""
    # Selenium Manager is never needed with both paths given; offline makes
    # sure it could not fetch anything even if some code path asked it to.
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={window[0]},{window[1]}")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    return driver


def qw_command() -> list[str]:
    """The ``qw`` console script of this interpreter's environment."""
    beside = Path(sys.executable).parent / "qw"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("qw")
    if found is None:
        raise RuntimeError("the qw command is not installed in this environment")
    return [found]


def child_env() -> dict[str, str]:
    """The environment for a child: this directory importable, no inherited store settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("QW_URL", "QW_NAMESPACE")}
    env.pop("QW_DASHBOARD_TOKEN", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Child:
    """A child process whose merged output is drained (a full pipe would block it) and kept."""

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name = name
        self.argv = list(argv)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=child_env(),
        )
        self._reader = threading.Thread(target=self._read, name=f"{name}-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def output(self) -> str:
        """What the child printed so far (for failure messages)."""
        with self._changed:
            return "\n".join(self.lines[-200:])

    def wait_line(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first output line matching ``pattern``; fail if the child exits first."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    found = pattern.search(line)
                    if found:
                        return found
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode} before printing "
                        f"{pattern.pattern!r}:\n{self.output()}"
                    )
                if left <= 0:
                    raise TimeoutError(
                        f"{self.name} printed no {pattern.pattern!r} in {timeout} s:\n"
                        f"{self.output()}"
                    )
                self._changed.wait(min(left, 0.2))

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        return self.proc.returncode


class Dashboard(Child):
    """``qw dashboard`` on a free port, started and ready."""

    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        token: str | None = None,
        refresh_ms: int = REFRESH_MS,
        extra: Sequence[str] = (),
    ) -> None:
        argv = [*qw_command(), "dashboard", "--url", url, "--namespace", namespace]
        argv += ["--host", "127.0.0.1", "--port", "0", "--refresh-ms", str(refresh_ms)]
        if token is not None:
            argv += ["--token", token]
        super().__init__("qw dashboard", [*argv, *extra])
        self.namespace = namespace
        try:
            self.base = self.wait_line(SERVING, timeout=30).group(1)
            with urllib.request.urlopen(f"{self.base}/healthz", timeout=5) as answer:
                assert answer.status == 200, answer.status
        except BaseException:
            self.stop()
            raise

    def page(self, path: str = "", namespace: str | None = None) -> str:
        """The absolute URL of ``path`` (e.g. ``jobs``) under ``/ns/{namespace}/``."""
        return f"{self.base}/ns/{quote(namespace or self.namespace, safe='')}/{path}"

    def job_page(self, job_id: str) -> str:
        return self.page(f"jobs/{quote(job_id, safe='')}")

    def workflow_page(self, workflow_id: str) -> str:
        return self.page(f"workflows/{quote(workflow_id, safe='')}")


class Worker(Child):
    """``qw worker e2e_app:app`` on a namespace, registered in the store before it returns."""

    def __init__(
        self,
        url: str,
        namespace: str,
        client: qw.Client,
        *,
        queues: Sequence[str] = ("work", "other"),
        concurrency: int = 4,
        app: str = "e2e_app:app",
    ) -> None:
        argv = [*qw_command(), "worker", app, "--url", url, "--namespace", namespace]
        argv += ["--queues", ",".join(queues), "--concurrency", str(concurrency)]
        # No prefetch: a paused queue then holds every job it has not started,
        # and a short poll lets a resumed queue drain without waiting a second.
        argv += ["--prefetch", "0", "--poll-interval", "0.2", "--grace", "5"]
        argv += ["--log-level", "warning", "--no-scheduler"]
        super().__init__("qw worker", argv)
        try:
            wait_for(
                lambda: any(w.pid == self.proc.pid for w in client.workers()) or None,
                30,
                f"the worker (pid {self.proc.pid}) to register",
                check=self._alive,
            )
        except BaseException:
            self.stop()
            raise

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"qw worker exited with {self.proc.returncode}:\n{self.output()}")


def wait_for(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    check: Callable[[], None] | None = None,
) -> T:
    """Poll ``probe`` (store state, not the page) until it answers something not None."""
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        answer = probe()
        if answer is not None:
            return answer
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Store:
    """A store URL, a namespace no other test uses, and a client on it."""

    backend: str
    url: str
    namespace: str
    client: qw.Client

    def app(self) -> tuple[qw.App, e2e_app.Tasks]:
        """A producer app on this store and namespace, with the worker's tasks registered."""
        app = qw.App(self.url, self.namespace)
        return app, e2e_app.register(app)


def unique_namespace(prefix: str = "e2e") -> str:
    return f"{prefix}-{secrets.token_hex(5)}"


# -- page helpers ------------------------------------------------------------


def wait_page(driver: WebDriver, condition: Callable[[WebDriver], T], timeout: float = 15) -> T:
    """WebDriverWait on the DOM; the message says what the page showed when it gave up."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(
        driver, timeout, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]
    )
    return wait.until(condition)


def wait_alert(driver: WebDriver, timeout: float = 10) -> Alert:
    """The dialog (alert/confirm) the page opened."""
    from selenium.webdriver.support.expected_conditions import alert_is_present

    found = wait_page(driver, alert_is_present(), timeout)
    assert found is not False
    return found


def ticks(driver: WebDriver) -> int:
    """How many live refreshes the current page has applied (``body[data-live-ticks]``)."""
    value = driver.find_element("css selector", "body").get_attribute("data-live-ticks")
    return int(value or 0)


def wait_ticks(driver: WebDriver, count: int = 1, timeout: float = 15) -> int:
    """Wait for ``count`` more live refreshes of the current page; return the tick reached."""
    target = ticks(driver) + count
    wait_page(driver, lambda d: ticks(d) >= target or None, timeout)
    return ticks(driver)


def mark(driver: WebDriver) -> str:
    """Tag the loaded document; :func:`same_document` is true until something reloads it."""
    token = secrets.token_hex(8)
    driver.execute_script("window.__qwE2eMark = arguments[0];", token)
    return token


def same_document(driver: WebDriver, token: str) -> bool:
    return bool(driver.execute_script("return window.__qwE2eMark === arguments[0];", token))


def css(driver: WebDriver | WebElement, selector: str) -> WebElement:
    return driver.find_element("css selector", selector)


def css_all(driver: WebDriver | WebElement, selector: str) -> list[WebElement]:
    return driver.find_elements("css selector", selector)


#: Reads every match of a selector in one script run, so a live refresh
#: (which replaces elements) cannot land between finding and reading them.
_READ_ALL = """
const [selector, names] = arguments;
return Array.from(document.querySelectorAll(selector)).map((e) => {
  const row = {text: (e.innerText ?? e.textContent ?? "").trim()};
  for (const name of names) row[name] = e.getAttribute(name);
  return row;
});
"""


def read_all(driver: WebDriver, selector: str, *attributes: str) -> list[dict[str, str | None]]:
    """``{"text": ..., attribute: value, ...}`` for every element matching ``selector``."""
    rows: list[dict[str, str | None]] = driver.execute_script(_READ_ALL, selector, list(attributes))
    return rows


def text_of(driver: WebDriver, selector: str) -> str | None:
    """The trimmed text of the first element matching ``selector`` (None when absent)."""
    found = read_all(driver, selector)
    return found[0]["text"] if found else None


def queue_count(driver: WebDriver, queue: str, status: str) -> int | None:
    """The overview's count of ``status`` jobs on ``queue`` (None while the row is absent)."""
    # Queue names cannot hold a quote (qw.validation.QUEUE_PATTERN).
    found = text_of(driver, f'table#queues tr[data-queue="{queue}"] td[data-count="{status}"]')
    return None if found is None else int(found)


def flash(driver: WebDriver) -> str:
    return text_of(driver, "#flash") or ""
