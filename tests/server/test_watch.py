"""The live page's routes for any model (rnnstream.server.watch) against a real server process: active streams
most recent first, a watched stream's steps pushed as they settle (from HTTP infer, WebSocket and CSV alike),
a CSV stepped through a stream, and every client-set size bounded (a JSON 4xx naming the limit)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

import rnnstream
from tests.server.conftest import ServerProcess

SEED = rnnstream.load(rnnstream.demo.SEED_MODEL)
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def small_limits() -> Iterator[ServerProcess]:
    """seed and identity, with small limits on what the watch routes take."""
    process = ServerProcess("seed", "builtin:identity", "--max-watchers", "2", "--max-watch-steps", "50",
                            "--max-csv-rows", "60", "--max-listed-streams", "10").start()
    yield process
    process.stop()


def sid() -> str:
    return f"w-{uuid.uuid4().hex[:8]}"


def infer(client: httpx.Client, stream: str, x: np.ndarray, start: bool = False) -> float:
    reply = client.post("/v2/models/seed/infer", json={
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": x.tolist()}],
        "parameters": {"sequence_id": stream, "sequence_start": start}})
    assert reply.status_code == 200, reply.text
    return float(reply.json()["outputs"][0]["data"][0])


def csv_text(xs: np.ndarray, header: bool = True) -> str:
    rows = [",".join(repr(float(v)) for v in row) for row in xs]
    return "\n".join((["a,b,c,d"] if header else []) + rows) + "\n"


def refused(response: httpx.Response, status: int, limit: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    found: dict[str, Any] = response.json()
    assert found["error"]
    if limit is not None:
        assert found["limit"]["name"] == limit
    return found


def events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON data of each SSE event (comments skipped)."""
    for line in lines:
        if line.startswith("data: "):
            yield json.loads(line[6:])


def test_a_csv_steps_a_stream_exactly_as_the_model_runs(small_limits: ServerProcess) -> None:
    xs = np.random.default_rng(3).normal(size=(50, 4)).astype(np.float32)
    ys, _ = SEED.run(xs[None], SEED.initial_state(1))
    stream = sid()
    with httpx.Client(base_url=small_limits.url) as client:
        reply = client.post(f"/v2/models/seed/streams/{stream}/csv", content=csv_text(xs))
        assert reply.status_code == 200, reply.text
        found = reply.json()
        assert found["steps"] == 50 and found["sequence_id"] == stream
        np.testing.assert_allclose(np.array(found["outputs"]["output"])[:, 0], np.asarray(ys)[0, :, 0], **TOL)
        # the stream goes on: one more step over /infer continues from the CSV's state
        more, _ = SEED.run(np.concatenate([xs, xs[:1]])[None], SEED.initial_state(1))
        np.testing.assert_allclose(infer(client, stream, xs[0]), np.asarray(more)[0, -1, 0], **TOL)
        # start=false continues the stream; a headerless CSV is all rows
        again = client.post(f"/v2/models/seed/streams/{stream}/csv?start=false", content=csv_text(xs[:1], False))
        assert again.json()["steps"] == 1


def test_csv_refusals_name_the_row_and_the_limit(small_limits: ServerProcess) -> None:
    xs = np.ones((61, 4), np.float32)
    with httpx.Client(base_url=small_limits.url) as client:
        path = f"/v2/models/seed/streams/{sid()}/csv"
        assert refused(client.post(path, content=csv_text(xs)), 400, "max_csv_rows")["limit"]["value"] == 61
        assert "row 2 has 3 values" in refused(client.post(path, content="1,2,3,4\n1,2,3\n"), 400)["error"]
        assert "input 'input'" in refused(client.post(path, content="1,2,3,4\n1,x,3,4\n"), 400)["error"]
        assert "no rows" in refused(client.post(path, content="a,b\n"), 400)["error"]
        nonfinite = refused(client.post(path, content="1,2,3,4\n1,nan,3,4\n"), 400)
        assert nonfinite["row"] == 2 and nonfinite["steps_applied"] == 1
        assert refused(client.post(path, content=b"\xff\xfe"), 400)["error"].startswith("the CSV body must be UTF-8")
        refused(client.post(f"/v2/models/nope/streams/{sid()}/csv", content="1,2,3,4\n"), 404)


def test_active_streams_most_recent_first_and_bounded(small_limits: ServerProcess) -> None:
    names = [sid() for _ in range(3)]
    with httpx.Client(base_url=small_limits.url) as client:
        for name in names:
            infer(client, name, np.ones(4, np.float32), start=True)
            time.sleep(0.002)  # distinct write times
        infer(client, names[0], np.ones(4, np.float32))
        listed = client.get("/v2/models/seed/streams?limit=3").json()
        assert [s["id"] for s in listed["streams"]] == [names[0], names[2], names[1]]
        assert listed["streams"][0]["steps"] == 2 and listed["count"] >= 3
        refused(client.get("/v2/models/seed/streams?limit=11"), 400, "max_listed_streams")
        assert "positive integer" in refused(client.get("/v2/models/seed/streams?limit=x"), 400)["error"]
        refused(client.get("/v2/models/nope/streams"), 404)
        assert client.get("/v2/models/identity/streams").json()["model_name"] == "identity"


def test_a_watched_stream_pushes_its_steps_from_every_transport(small_limits: ServerProcess) -> None:
    stream = sid()
    xs = np.random.default_rng(5).normal(size=(4, 4)).astype(np.float32)
    with httpx.Client(base_url=small_limits.url, timeout=20) as client:
        first = infer(client, stream, xs[0], start=True)
        with client.stream("GET", f"/v2/models/seed/streams/{stream}/watch?steps=10") as watch:
            pushed = events(watch.iter_lines())
            hello = next(pushed)
            assert hello["steps_applied"] == 1 and hello["inputs"] == ["input"] and hello["ring"] == 10
            second = infer(client, stream, xs[1])
            with connect(small_limits.url.replace("http://", "ws://") + "/v2/stream") as socket:
                socket.send(json.dumps({"model": "seed", "sequence_id": stream, "inputs": xs[2].tolist()}))
                third = json.loads(socket.recv())["outputs"]["output"][0]
            client.post(f"/v2/models/seed/streams/{stream}/csv?start=false", content=csv_text(xs[3:], False))
            steps: list[dict[str, Any]] = []
            while len(steps) < 3:
                steps += next(pushed)["steps"]
    assert [s["n"] for s in steps] == [1, 2, 3]
    np.testing.assert_allclose([s["inputs"]["input"] for s in steps], xs[1:], **TOL)
    ys, _ = SEED.run(xs[None], SEED.initial_state(1))
    np.testing.assert_allclose([s["outputs"]["output"][0] for s in steps], np.asarray(ys)[0, 1:, 0], **TOL)
    np.testing.assert_allclose([first, second, third], np.asarray(ys)[0, :3, 0], **TOL)


def test_watches_are_bounded_and_the_last_one_out_removes_the_tap(small_limits: ServerProcess) -> None:
    stream = sid()
    with httpx.Client(base_url=small_limits.url, timeout=20) as client:
        path = f"/v2/models/seed/streams/{stream}/watch"
        refused(client.get(path + "?steps=51"), 400, "max_watch_steps")
        refused(client.get(path + "?steps=0"), 400)
        refused(client.get("/v2/models/nope/streams/s/watch"), 404)
        refused(client.get(f"/v2/models/seed/streams/{'x' * 300}/watch"), 400, "max_id_length")
        with client.stream("GET", path) as one, client.stream("GET", path) as two:
            readers = [events(one.iter_lines()), events(two.iter_lines())]  # kept: a dropped reader closes its response
            assert all(next(reader)["steps_applied"] == 0 for reader in readers)
            assert "(max_watchers, --max-watchers)" in refused(client.get(path), 503, "max_watchers")["error"]
        for _ in range(100):  # the server sees the two leave: watches open again
            with client.stream("GET", path) as again:
                if again.status_code == 200:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the watches were not released when their clients left")
