"""The shop's tasks and the qw app they are registered on.

The store comes from ``$QW_URL`` and the namespace from ``$QW_NAMESPACE``
(as with ``qw.open``), so the web process and ``qw worker imageshop.tasks:app``
find the same queues. The work is simulated: the point is the plumbing.
"""

from __future__ import annotations

import hashlib
import time

import qw

app = qw.App()

#: Seconds each simulated resize phase takes (tests set it to 0).
RESIZE_PHASE_S = 0.05


@app.task(queue="images", max_attempts=3, timeout=60)
def resize(url: str, width: int) -> dict[str, object]:
    """Make a thumbnail of the image at ``url``, ``width`` pixels wide (simulated)."""
    job = qw.current_job()
    job.progress(0.0, "downloading")
    time.sleep(RESIZE_PHASE_S)
    job.progress(0.5, "resizing")
    time.sleep(RESIZE_PHASE_S)
    digest = hashlib.sha256(f"{url}:{width}".encode()).hexdigest()[:16]
    job.progress(1.0, "stored")
    return {"source": url, "width": width, "height": width * 3 // 4, "thumbnail": f"{digest}.png"}


@app.task(queue="reports")
def region_sales(region: str) -> dict[str, object]:
    """One region's sales total (simulated: a number derived from its name)."""
    return {"region": region, "total": sum(region.encode()) * 10}


@app.task(queue="reports")
def summarize(parts: list[dict[str, object]]) -> dict[str, object]:
    """Fan-in: the regions' totals and their sum."""
    totals = {str(p["region"]): int(str(p["total"])) for p in parts}
    return {"regions": totals, "total": sum(totals.values())}
