"""Every URL the pages link to, built with quoting: ids and names may hold any character."""

from __future__ import annotations

from urllib.parse import quote, urlencode

__all__ = ["Urls", "seg"]

# A path segment that is only dots is a "." or ".." segment to a browser
# (percent-encoded or not), which it folds away before sending; such job ids
# are addressed by query string instead (``/ns/N/job?id=..``).
_DOT_SEGMENTS = {".", ".."}


def seg(value: str) -> str:
    """``value`` as one path segment: everything but unreserved characters percent-encoded."""
    return quote(value, safe="")


def query(path: str, **params: str | int | None) -> str:
    """``path`` with the non-empty ``params`` as its query string."""
    kept = {k: v for k, v in params.items() if v is not None and v != ""}
    return f"{path}?{urlencode(kept)}" if kept else path


class Urls:
    """URL builders, handed to every template as ``u``."""

    @staticmethod
    def ns(ns: str, page: str = "") -> str:
        return f"/ns/{seg(ns)}/{page}"

    @staticmethod
    def jobs(ns: str, **params: str | int | None) -> str:
        return query(f"/ns/{seg(ns)}/jobs", **params)

    @staticmethod
    def job(ns: str, job_id: str, action: str | None = None) -> str:
        if job_id in _DOT_SEGMENTS:
            base = f"/ns/{seg(ns)}/job" + (f"/{action}" if action else "")
            return query(base, id=job_id)
        return f"/ns/{seg(ns)}/jobs/{seg(job_id)}" + (f"/{action}" if action else "")

    @staticmethod
    def queue_action(ns: str, queue: str, action: str) -> str:
        return f"/ns/{seg(ns)}/queues/{seg(queue)}/{action}"

    @staticmethod
    def ns_action(ns: str, action: str) -> str:
        return f"/ns/{seg(ns)}/{action}"

    @staticmethod
    def workflows(ns: str, **params: str | int | None) -> str:
        return query(f"/ns/{seg(ns)}/workflows", **params)

    @staticmethod
    def workflow(ns: str, workflow_id: str, action: str | None = None) -> str:
        return f"/ns/{seg(ns)}/workflows/{seg(workflow_id)}" + (f"/{action}" if action else "")

    @staticmethod
    def static(name: str) -> str:
        from qw_dashboard import __version__

        # The version busts a browser's cache when an upgrade changes the files.
        return f"/static/{seg(name)}?v={seg(__version__)}"
