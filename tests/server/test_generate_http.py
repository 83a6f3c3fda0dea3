"""Token streaming over HTTP (Triton's generate extension), against a real server process."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import httpx
import pytest

import rnnstream
from tests.server.conftest import ServerProcess

TEXT = rnnstream.load(rnnstream.demo.TEXT_MODEL)
VOCAB = rnnstream.demo.text_vocabulary()
STREAM = "/v2/models/text/generate_stream"
WHOLE = "/v2/models/text/generate"


def solo(prompt: str, **options: Any) -> str:
    """What rnnstream.generate gives in-process for one prompt."""
    stop = [VOCAB.encode(s)[0] for s in options.pop("stop", [])]
    return VOCAB.decode(rnnstream.generate(TEXT, VOCAB.encode(prompt), stop=stop, **options))


def read_events(client: httpx.Client, body: dict[str, Any]) -> list[tuple[float, dict[str, Any]]]:
    """Every SSE event of one generate_stream request, with the time it was read."""
    events = []
    with client.stream("POST", STREAM, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append((time.perf_counter(), json.loads(line.removeprefix("data: "))))
            else:
                assert line == "", line  # events are separated by blank lines, nothing else is sent
    return events


def metric(url: str, series: str) -> float:
    found = re.search(re.escape(series) + r" (\S+)", httpx.get(url + "/metrics").text)
    return float(found.group(1)) if found else 0.0


def active_generations(url: str) -> int:
    models = httpx.get(url + "/v2/stats").json()["models"]
    return int(next(m for m in models if m["name"] == "text")["active_generations"])


def test_tokens_arrive_as_events_while_the_generation_runs(demo_server: ServerProcess) -> None:
    body = {"text_input": "KING.\n", "parameters": {"max_tokens": 400, "temperature": 0.8, "seed": 3}}
    first_seen_running = False
    with httpx.Client(base_url=demo_server.url) as client, client.stream("POST", STREAM, json=body) as response:
        started, times, events = time.perf_counter(), [], []
        for line in response.iter_lines():
            if not line:
                continue
            times.append(time.perf_counter())
            events.append(json.loads(line.removeprefix("data: ")))
            if len(events) == 1:  # the first token is here before the generation is over
                first_seen_running = active_generations(demo_server.url) == 1
    assert first_seen_running
    assert [e["index"] for e in events] == list(range(400))
    assert all(e["finish_reason"] is None for e in events[:-1]) and events[-1]["finish_reason"] == "length"
    assert all(e["model_name"] == "text" and e["model_version"] == "1" for e in events)
    assert all(VOCAB.tokens[e["token_id"]] == e["text_output"] for e in events)
    assert len({round(t, 4) for t in times}) >= 10  # read at many different moments, not in one piece
    assert times[0] - started < (times[-1] - started) / 2


def test_the_stream_equals_rnnstream_generate_and_seeds_repeat(demo_server: ServerProcess) -> None:
    parameters = {"max_tokens": 120, "temperature": 0.9, "top_k": 20, "top_p": 0.95, "seed": 11}
    expected = solo("ROMEO.\n", max_tokens=120, temperature=0.9, top_k=20, top_p=0.95, seed=11)
    with httpx.Client(base_url=demo_server.url) as client:
        streamed = "".join(e["text_output"] for _, e in read_events(client, {"text_input": "ROMEO.\n",
                                                                             "parameters": parameters}))
        again = "".join(e["text_output"] for _, e in read_events(client, {"text_input": "ROMEO.\n",
                                                                          "parameters": parameters}))
        whole = client.post(WHOLE, json={"text_input": "ROMEO.\n", "parameters": parameters, "id": "r-1"}).json()
        by_ids = client.post("/v2/models/text/versions/1/generate",
                             json={"input_ids": VOCAB.encode("ROMEO.\n"), "parameters": parameters}).json()
        other = client.post(WHOLE, json={"text_input": "ROMEO.\n", "parameters": {**parameters, "seed": 12}}).json()
    assert streamed == again == expected
    assert whole["text_output"] == expected and whole["id"] == "r-1" and whole["finish_reason"] == "length"
    assert by_ids["output_ids"] == VOCAB.encode(expected)
    assert other["text_output"] != expected


def test_stop_tokens_and_stop_text(demo_server: ServerProcess) -> None:
    seed = next(s for s in range(50) if "\n\n" in solo("JULIET.\n", max_tokens=300, temperature=0.8, seed=s)[:-1])
    full = solo("JULIET.\n", max_tokens=300, temperature=0.8, seed=seed)
    at_newline = solo("JULIET.\n", max_tokens=300, temperature=0.8, seed=seed, stop=["\n"])
    with httpx.Client(base_url=demo_server.url) as client:
        stopped = client.post(WHOLE, json={"text_input": "JULIET.\n", "parameters": {
            "max_tokens": 300, "temperature": 0.8, "seed": seed, "stop": ["\n"]}}).json()
        events = read_events(client, {"text_input": "JULIET.\n", "parameters": {
            "max_tokens": 300, "temperature": 0.8, "seed": seed, "stop": ["\n\n"]}})
    assert stopped["text_output"] == at_newline and at_newline.endswith("\n") and stopped["finish_reason"] == "stop"
    text = "".join(e["text_output"] for _, e in events)
    assert text == full[: full.index("\n\n") + 2] and events[-1][1]["finish_reason"] == "stop"


def test_concurrent_clients_are_batched_and_each_gets_its_solo_text(demo_server: ServerProcess) -> None:
    prompts = ["ROMEO.\n", "JULIET.\n", "KING.\n", "First Citizen.\n"] * 2
    url = demo_server.url
    streams_before = metric(url, 'rnnstream_generate_streams_sum{model="text"}')
    steps_before = metric(url, 'rnnstream_generate_streams_count{model="text"}')

    async def client(k: int, http: httpx.AsyncClient) -> str:
        body = {"text_input": prompts[k], "parameters": {"max_tokens": 80, "temperature": 0.8, "seed": 100 + k}}
        text = ""
        async with http.stream("POST", STREAM, json=body) as response:
            async for line in response.aiter_lines():
                if line:
                    text += json.loads(line.removeprefix("data: "))["text_output"]
        return text

    async def main() -> list[str]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            return await asyncio.gather(*(client(k, http) for k in range(len(prompts))))

    texts = asyncio.run(main())
    streams = metric(url, 'rnnstream_generate_streams_sum{model="text"}') - streams_before
    steps = metric(url, 'rnnstream_generate_streams_count{model="text"}') - steps_before
    assert streams == 8 * 80 and streams / steps > 1.5  # several clients per engine call
    for k, text in enumerate(texts):
        assert text == solo(prompts[k], max_tokens=80, temperature=0.8, seed=100 + k), k


def test_a_client_that_disconnects_cancels_its_stream(demo_server: ServerProcess) -> None:
    url = demo_server.url
    tokens_before = metric(url, 'rnnstream_generated_tokens_total{model="text"}')
    body = {"text_input": "ROMEO.\n", "parameters": {"max_tokens": 20000, "temperature": 0.8, "seed": 1}}
    with httpx.Client(base_url=url) as client, client.stream("POST", STREAM, json=body) as response:
        for read, _ in enumerate(response.iter_lines()):
            if read == 6:  # three events and their blank lines: hang up
                break
    deadline = time.monotonic() + 5
    while active_generations(url) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert active_generations(url) == 0
    time.sleep(0.2)
    generated = metric(url, 'rnnstream_generated_tokens_total{model="text"}') - tokens_before
    assert 3 <= generated < 20000  # it stopped well before its 20,000 tokens


def test_more_generations_than_the_limit_get_503(demo_server: ServerProcess) -> None:
    body = {"text_input": "ROMEO.\n", "parameters": {"max_tokens": 20000, "seed": 0}}
    with httpx.Client(base_url=demo_server.url, timeout=30) as client:
        opened = [client.stream("POST", STREAM, json=body) for _ in range(12)]
        responses = [stream.__enter__() for stream in opened]
        readers = [response.iter_lines() for response in responses]  # kept: dropping one closes its connection
        try:
            for reader in readers:  # every one has started
                assert next(reader).startswith("data: ")
            refused = client.post(STREAM, json=body)
            assert refused.status_code == 503 and "--max-generations 12" in refused.json()["error"]
            assert refused.json()["retryable"] is True
            assert client.post(WHOLE, json=body).status_code == 503
        finally:
            for stream in opened:
                stream.__exit__(None, None, None)
    deadline = time.monotonic() + 5
    while active_generations(demo_server.url) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert active_generations(demo_server.url) == 0


BAD = [
    ({"text_input": "x", "parameters": {"max_tokens": 0}}, "parameters.max_tokens"),
    ({"text_input": "x", "parameters": {"max_tokens": 20001}}, "--max-tokens"),
    ({"text_input": "x", "parameters": {"max_tokens": 1.5}}, "parameters.max_tokens"),
    ({"text_input": "x", "parameters": {"temperature": -1}}, "parameters.temperature"),
    ({"text_input": "x", "parameters": {"temperature": "hot"}}, "parameters.temperature"),
    ({"text_input": "x", "parameters": {"top_k": 0}}, "parameters.top_k"),
    ({"text_input": "x", "parameters": {"top_p": 1.5}}, "parameters.top_p"),
    ({"text_input": "x", "parameters": {"seed": -1}}, "parameters.seed"),
    ({"text_input": "x", "parameters": {"stop": [""]}}, "parameters.stop"),
    ({"text_input": "x", "parameters": {"stop": ["€"]}}, "parameters.stop"),
    ({"text_input": "x", "parameters": {"beam_width": 2}}, "beam_width"),
    ({"text_input": "x", "parameters": [1]}, "got `array` - at `$.parameters`"),
    ({"text_input": "Tschüß €"}, "text_input"),
    ({"text_input": ""}, "text_input"),
    ({"input_ids": [1, 999]}, "input_ids: token 999 is out of range; this model takes ids 0..75"),
    ({"input_ids": "abc"}, "input_ids"),
    ({"text_input": "x", "input_ids": [1]}, "one of them"),
    ({"parameters": {}}, "text_input (a string) or input_ids"),
    ({"text_input": "x", "prompt": "y"}, "unknown field `prompt` - at `$`"),
    ({"text_input": "x", "id": 5}, "got `int` - at `$.id`"),
    ({"text_input": "x", "parameters": {"top_k": 2**63}}, "`$.parameters.top_k`"),
    ({"text_input": "x", "parameters": {"top_k": 77}}, "parameters.top_k must be from 1 to the vocabulary's 76"),
    ({"text_input": "x" * 8193}, "max_prompt_tokens"),
    ({"text_input": "x", "parameters": {"stop": ["a"] * 17}}, "max_stop"),
    ({"text_input": "x", "parameters": {"stop": ["a" * 65]}}, "max_stop_length"),
    ({"text_input": "x", "id": "i" * 257}, "max_id_length"),
]


@pytest.mark.parametrize("path", [STREAM, WHOLE])
def test_bad_requests_get_400_naming_the_field(demo_server: ServerProcess, path: str) -> None:
    with httpx.Client(base_url=demo_server.url) as client:
        for body, field in BAD:
            response = client.post(path, json=body)
            assert response.status_code == 400, (body, response.text)
            assert field in response.json()["error"], (body, response.json())
        not_json = client.post(path, content=b"{nope")
        assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    assert active_generations(demo_server.url) == 0


def test_models_that_are_not_token_models_are_400_saying_why(demo_server: ServerProcess) -> None:
    with httpx.Client(base_url=demo_server.url) as client:
        for model, path in (("seed", "generate_stream"), ("co2", "generate"), ("seed", "versions/1/generate")):
            response = client.post(f"/v2/models/{model}/{path}", json={"input_ids": [1]})
            assert response.status_code == 400 and "not a token model" in response.json()["error"]
            assert "text" in response.json()["error"]  # it names the token models there are
            assert f"/v2/models/{model}/infer" in response.json()["error"]  # and what to use instead
        assert client.post("/v2/models/nope/generate", json={"input_ids": [1]}).status_code == 404
        assert client.post("/v2/models/text/versions/2/generate", json={"input_ids": [1]}).status_code == 404
