"""Run one bench part in a child process group: the parent's side and the child's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench.config import ROOT

__all__ = ["answer", "run_in_group"]


def run_in_group(argv: list[str], spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``python -m *argv SPEC`` in its own process group, killed with it at ``timeout``.

    The child prints ``RESULT <json>`` last; that dict comes back with
    ``wall_s`` added, or ``{"ok": False, "error": ...}`` when it timed out or
    printed none.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv, json.dumps(spec)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"ok": False, "error": f"timed out after {timeout:.0f} s (killed)"}
    finally:
        # Workers a crashed child left behind go with its group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    elapsed = time.monotonic() - started
    for line in reversed(out.decode(errors="replace").splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            result["wall_s"] = round(elapsed, 2)
            return result
    return {"ok": False, "error": f"exited with {proc.returncode} and no result"}


def answer(
    work: Callable[[], dict[str, Any]], *, unsupported: tuple[type[Exception], ...] = ()
) -> int:
    """The child's side: print ``RESULT <json>`` of ``work()``, or of the error it raised.

    An ``unsupported`` error is reported as such (the system lacks the
    feature, not a failure); any other is printed with its traceback.
    """
    try:
        out: dict[str, Any] = {"ok": True, "result": work()}
    except unsupported as exc:
        out = {"ok": False, "unsupported": True, "error": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print("RESULT " + json.dumps(out, default=str), flush=True)
    return 0
