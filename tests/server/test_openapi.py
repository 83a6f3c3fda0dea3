"""The OpenAPI document, and schemathesis against it: cases generated from the schema, valid and invalid.

Every case must get no 5xx and a declared content type; cases the schema calls invalid must be refused
(4xx). A canary stream is stepped before and after: no case may change it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import content_type_conformance, negative_data_rejection, not_a_server_error

import rnnstream
from tests.server.conftest import ServerProcess

SCALE = int(os.environ.get("RNNSTREAM_FUZZ_SCALE", "1"))
SEED = rnnstream.load(rnnstream.demo.SEED_MODEL)
CANARY = "canary-openapi"
CASES: Counter[tuple[str, str, int]] = Counter()
XS = np.random.default_rng(23).normal(0, 1, (4, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def openapi_server() -> Iterator[ServerProcess]:
    process = ServerProcess("seed", "text", "co2", "--max-tokens", "16", "--max-prompt-tokens", "64",
                            "--max-forecast-steps", "5000").start()
    for t in range(2):
        canary_step(process.url, t)
    yield process
    process.stop()


def canary_step(url: str, t: int) -> float:
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": XS[t].tolist()}],
            "parameters": {"sequence_id": CANARY, "sequence_start": t == 0, "sequence_step": t + 1}}
    response = httpx.post(url + "/v2/models/seed/infer", json=body)
    assert response.status_code == 200, response.text
    return float(response.json()["outputs"][0]["data"][0])


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_every_operation(openapi_server: ServerProcess, mode: schemathesis.GenerationMode) -> None:
    """Each operation of the document, with cases that fit its schema (positive) or break it (negative).

    (schemathesis' Python API and hypothesis directly: its pytest plugin reads an attribute pytest 9 removed.)"""
    schema = schemathesis.openapi.from_url(openapi_server.url + "/v2/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 29  # 10 server routes, 8 per model prefix (with and without a version), 3 watch routes
    for operation in operations:
        if operation.path.endswith("/watch"):
            continue  # an endless event stream: tests/server/test_watch.py drives it
        if mode == schemathesis.GenerationMode.NEGATIVE and not operation.get_request_payload_content_types():
            continue  # nothing to break: no body, and any text is a valid path parameter
        exercise(operation, mode)


def exercise(operation: Any, mode: schemathesis.GenerationMode) -> None:
    """Run one operation's generated cases through schemathesis' checks."""

    @given(operation.as_strategy(generation_mode=mode))
    @settings(max_examples=60 * SCALE, deadline=None, derandomize=SCALE == 1, database=None,
              suppress_health_check=list(HealthCheck))
    def call(case: Any) -> None:
        response = case.call_and_validate(checks=[not_a_server_error, content_type_conformance,
                                                  negative_data_rejection])
        CASES[(operation.label, mode.value, response.status_code)] += 1

    call()


def test_no_case_changed_the_canary(openapi_server: ServerProcess) -> None:
    """Last: the canary continues exactly as an in-process stream does."""
    got = [canary_step(openapi_server.url, t) for t in range(2, 4)]
    ys, _ = SEED.run(XS[None], SEED.initial_state(1))
    np.testing.assert_allclose(got, np.asarray(ys)[0, 2:, 0], rtol=1e-5, atol=1e-5)
    statuses = Counter(f"{status // 100}xx" for (_, _, status), n in CASES.items() for _ in range(n))
    print(f"\nschemathesis: {sum(CASES.values())} cases over {len({k[0] for k in CASES})} operations: "
          f"{dict(sorted(statuses.items()))}")


def test_the_document_lists_every_route_and_its_request_types(openapi_server: ServerProcess) -> None:
    document = httpx.get(openapi_server.url + "/v2/openapi.json").json()
    assert {"/v2/models/{name}/infer", "/v2/models/{name}/generate_stream", "/v2/models/{name}/forecast",
            "/v2/health/ready", "/metrics", "/v2/models/{name}/streams/{stream_id}/csv"} <= set(document["paths"])
    schemas = document["components"]["schemas"]
    assert {"InferenceRequest", "GenerateRequest", "ForecastRequest", "StreamMessage", "ErrorReply"} <= set(schemas)
    assert schemas["InferInput"]["properties"]["datatype"]["enum"][:2] == ["BOOL", "FP16"]
