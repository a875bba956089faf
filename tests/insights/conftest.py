"""Fixtures for the Insights tests: the digits example served over real HTTP."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="Insights needs the `insights` extra (fastapi, uvicorn)")
pytest.importorskip("sklearn", reason="the Insights example needs scikit-learn")

from attribuo.insights.example import build_visualizer  # noqa: E402
from attribuo.insights.server import InsightsServer  # noqa: E402


@pytest.fixture
def serve():
    """``serve(visualizer, **kw) -> (server, base_url)``; every server is stopped afterwards."""
    servers = []

    def start(visualizer, **kwargs):
        server = InsightsServer(visualizer, **kwargs)
        server.start()
        servers.append(server)
        return server, server.url.rstrip("/")

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def example_url():
    """One digits example server shared by a module's tests (state may advance)."""
    server = InsightsServer(build_visualizer())
    server.start()
    yield server.url.rstrip("/")
    server.stop()
