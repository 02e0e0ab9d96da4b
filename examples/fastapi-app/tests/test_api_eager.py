"""The API with qw.testing.eager: no server, each aenqueue returns after its job ran."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from asgi_lifespan import LifespanManager

import imageshop.tasks
import qw.testing
from imageshop.api import api


def test_endpoints_in_eager_mode_on_a_memory_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imageshop.tasks, "RESIZE_PHASE_S", 0.0)

    async def main() -> None:
        async with LifespanManager(api) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
                made = (await http.post("/images", json={"url": "a.png", "width": 8})).json()
                # No wait: the job ran before POST answered.
                job = (await http.get(f"/jobs/{made['id']}")).json()
                assert job["status"] == "succeeded"
                assert job["result"]["height"] == 6
                assert job["progress"]["message"] == "stored"
                await http.post("/reports", json={"regions": ["eu"], "report_id": "r"})
                report = (await http.get("/reports/r")).json()
                assert report["result"] == {"regions": {"eu": 2180}, "total": 2180}

    with qw.testing.eager(imageshop.tasks.app) as mode:
        asyncio.run(main())
        assert mode.totals.succeeded == 3
