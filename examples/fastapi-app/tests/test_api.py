"""The API through a real ASGI client (lifespan run), with a real worker on a real store."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest
from asgi_lifespan import LifespanManager

import qw
from imageshop.api import api

Scenario = Callable[[httpx.AsyncClient], Awaitable[None]]


def run(scenario: Scenario) -> None:
    """Start the app (its lifespan opens the async client), run ``scenario``, stop it."""

    async def main() -> None:
        async with LifespanManager(api) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
                await scenario(http)

    asyncio.run(main())


def test_a_thumbnail_is_made_and_its_result_and_progress_arrive(shop: qw.App) -> None:
    async def scenario(http: httpx.AsyncClient) -> None:
        made = await http.post("/images", json={"url": "https://img.example/cat.jpg", "width": 64})
        assert made.status_code == 202, made.text
        job_id = made.json()["id"]
        done = await http.get(f"/jobs/{job_id}", params={"wait": 20})
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["status"] == "succeeded", body
        assert body["attempts"] == 1
        assert body["result"]["width"] == 64
        assert body["result"]["height"] == 48
        assert body["result"]["source"] == "https://img.example/cat.jpg"
        assert body["progress"] == {"fraction": 1.0, "message": "stored"}
        assert body["error"] is None

    run(scenario)
    # What the API answered is what the store holds.
    job = shop.client.list_jobs(queue="images")[0]
    assert job.status is qw.JobStatus.SUCCEEDED


def test_a_report_fans_out_per_region_and_in_to_one_result(shop: qw.App) -> None:
    regions = ["eu", "us", "asia"]
    expected = {r: sum(r.encode()) * 10 for r in regions}

    async def scenario(http: httpx.AsyncClient) -> None:
        made = await http.post("/reports", json={"regions": regions, "report_id": "q3"})
        assert made.status_code == 202, made.text
        assert made.json() == {"id": "q3", "created": True}
        again = await http.post("/reports", json={"regions": regions, "report_id": "q3"})
        assert again.json() == {"id": "q3", "created": False}
        done = await http.get("/reports/q3", params={"wait": 20})
        body = done.json()
        assert body["state"] == "succeeded", body
        assert body["steps"] == {"succeeded": 4}
        assert body["result"] == {"regions": expected, "total": sum(expected.values())}

    run(scenario)
    assert len(shop.client.steps("q3")) == 4


def test_status_shows_counts_and_switches(shop: qw.App) -> None:
    async def scenario(http: httpx.AsyncClient) -> None:
        first = (await http.post("/images", json={"url": "a.png", "width": 10})).json()["id"]
        assert (await http.get(f"/jobs/{first}", params={"wait": 20})).json()["status"] == (
            "succeeded"
        )
        # An operator pauses the queue: the next image waits, and /status says so.
        await asyncio.to_thread(shop.client.set_enabled, False, "images")
        second = (await http.post("/images", json={"url": "b.png", "width": 10})).json()["id"]
        waited = (await http.get(f"/jobs/{second}", params={"wait": 0.5})).json()
        assert waited["status"] == "queued"
        body = (await http.get("/status")).json()
        assert body["namespace"] == shop.namespace
        assert body["queues"] == {"images": {"queued": 1, "succeeded": 1}}
        assert body["enabled"] is True
        assert body["paused_queues"] == ["images"]

    run(scenario)


@pytest.mark.parametrize(
    ("method", "path", "body", "code"),
    [
        ("get", "/jobs/no-such-job", None, 404),
        ("get", "/reports/no-such-report", None, 404),
        ("post", "/images", {"url": "a.png", "width": 0}, 422),
        ("post", "/images", {"url": "", "width": 10}, 422),
        ("post", "/reports", {"regions": []}, 422),
        ("post", "/reports", {"regions": ["eu"], "report_id": "not an id!"}, 422),
        ("get", "/jobs/x?wait=999", None, 422),
    ],
)
def test_bad_requests_are_refused_before_anything_is_stored(
    shop: qw.App, method: str, path: str, body: object, code: int
) -> None:
    async def scenario(http: httpx.AsyncClient) -> None:
        answer = await http.request(method, path, json=body)
        assert answer.status_code == code, answer.text

    run(scenario)
    assert shop.client.counts() == {}
