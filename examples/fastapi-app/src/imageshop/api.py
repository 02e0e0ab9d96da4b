"""The web API: endpoints enqueue qw jobs with the async client and report on them.

Run it with ``uvicorn imageshop.api:api`` and a worker with
``qw worker imageshop.tasks:app`` (both reading ``$QW_URL``/``$QW_NAMESPACE``).
No endpoint blocks the event loop: every store call is awaited.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

import qw
from imageshop.tasks import app, region_sales, resize, summarize

#: The longest ``?wait=`` a request may ask for, in seconds.
MAX_WAIT_S = 30.0


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    # Open the store at startup, so that a wrong $QW_URL fails the boot
    # rather than the first request; closed when the server stops.
    await app.async_client()
    yield
    await app.aclose()


api = FastAPI(title="imageshop", lifespan=lifespan)


class ImageRequest(BaseModel):
    url: str = Field(min_length=1, max_length=2000)
    width: int = Field(gt=0, le=4096)


class ReportRequest(BaseModel):
    regions: list[str] = Field(min_length=1, max_length=50)
    #: Makes the request idempotent: the same id twice stores one workflow.
    report_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,100}$")


def _job_view(job: qw.Job) -> dict[str, Any]:
    progress = job.progress
    return {
        "id": job.id,
        "status": job.status.value,
        "attempts": job.attempts,
        "progress": None
        if progress is None
        else {"fraction": progress.fraction, "message": progress.message},
        "result": job.result,
        "error": job.error,
    }


@api.post("/images", status_code=202)
async def create_thumbnail(request: ImageRequest) -> dict[str, Any]:
    """Enqueue a resize; answer at once with the job's id."""
    handle = await resize.aenqueue(request.url, request.width)
    return {"id": handle.id}


@api.get("/jobs/{job_id}")
async def get_job(
    job_id: str, wait: float = Query(default=0.0, ge=0.0, le=MAX_WAIT_S)
) -> dict[str, Any]:
    """A job's status, progress and result; ``?wait=S`` waits up to S seconds for it to end."""
    client = await app.async_client()
    try:
        job = await client.wait_finished(job_id, wait) if wait else await client.get(job_id)
    except qw.JobNotFound:
        raise HTTPException(404, f"no job {job_id}") from None
    except qw.InvalidInput as exc:
        raise HTTPException(422, str(exc)) from None
    return _job_view(job)


@api.post("/reports", status_code=202)
async def create_report(request: ReportRequest) -> dict[str, Any]:
    """A workflow: one ``region_sales`` step per region (fan-out), then ``summarize`` (fan-in)."""
    wf = app.workflow(request.report_id)
    parts = wf.map(region_sales, request.regions)
    wf.add(summarize, parts)
    handle = await wf.aenqueue()
    return {"id": handle.id, "created": handle.created}


@api.get("/reports/{report_id}")
async def get_report(
    report_id: str, wait: float = Query(default=0.0, ge=0.0, le=MAX_WAIT_S)
) -> dict[str, Any]:
    """The workflow's state, its steps by status, and its result once it succeeded."""
    client = await app.async_client()
    try:
        workflow = await client.get_workflow(report_id)
        if wait and workflow.state is qw.WorkflowState.RUNNING and workflow.output is not None:
            # The output step (the fan-in) is the last to end, also when a
            # region fails (it is then cancelled): waiting on it is waiting
            # on the report, woken by the store rather than polled.
            await client.wait_finished(workflow.output, wait)
            workflow = await client.get_workflow(report_id)
    except qw.WorkflowNotFound:
        raise HTTPException(404, f"no report {report_id}") from None
    except qw.InvalidInput as exc:
        raise HTTPException(422, str(exc)) from None
    result = None
    if workflow.state is qw.WorkflowState.SUCCEEDED and workflow.output is not None:
        result = (await client.get(workflow.output)).result
    return {
        "id": workflow.id,
        "state": workflow.state.value,
        "steps": {status.value: n for status, n in workflow.counts.items() if n},
        "result": result,
    }


@api.get("/status")
async def status() -> dict[str, Any]:
    """Jobs per queue and status, and the ON/OFF switches."""
    client = await app.async_client()
    counts = await client.counts()
    switches = await client.switches()
    return {
        "namespace": client.namespace,
        "queues": {
            queue: {s.value: n for s, n in by_status.items() if n}
            for queue, by_status in counts.items()
        },
        "enabled": switches.enabled,
        "paused_queues": sorted(q for q, on in switches.queues.items() if not on),
    }
