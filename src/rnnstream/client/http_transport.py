"""The client's HTTP transport: Open Inference Protocol infer requests (binary tensors) over one httpx pool.

It also reads model metadata (``GET /v2/models/{name}``) for both transports, and carries history priming
(a ``[1, T, *shape]`` input), whose shape the OIP request states.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import httpx

from rnnstream.client.outcomes import Answer, ConnectionLostError
from rnnstream.client.wire import HEADER_LENGTH, Call, infer_reply, infer_request


class HttpTransport:
    """Requests to the server at ``url`` (``http://host:port``), ``headers`` on each (the bearer token)."""

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        self.url = url.rstrip("/")
        # No timeout of its own: the retry policy bounds each attempt and the whole request.
        self.http = httpx.AsyncClient(base_url=self.url, headers=dict(headers), timeout=None)

    async def get(self, path: str) -> Answer:
        """``GET path``: its JSON body as an Answer whose ``body`` holds it (``outputs`` empty when it is a 200)."""
        try:
            response = await self.http.get(path)
        except httpx.TransportError as error:
            raise ConnectionLostError(f"GET {self.url}{path}: {error!r}") from error
        return _answer(response)

    async def send(self, call: Call) -> Answer:
        """One infer request: its outputs, or the server's refusal."""
        path = f"/v2/models/{quote(call.model.name, safe='')}/infer"
        content, headers = infer_request(call)
        try:
            response = await self.http.post(path, content=content, headers=headers)
        except httpx.TransportError as error:
            raise ConnectionLostError(f"POST {self.url}{path}: {error!r}") from error
        if response.status_code == 200:
            return Answer(infer_reply(call, response.content, response.headers.get(HEADER_LENGTH)))
        return _answer(response)

    async def aclose(self) -> None:
        await self.http.aclose()


def _answer(response: httpx.Response) -> Answer:
    """A JSON answer: a 200's body (``outputs`` empty), or a refusal."""
    try:
        body = response.json()
    except ValueError:  # not the server's JSON (a proxy's page): its status decides
        body = {"error": response.text[:500] or response.reason_phrase}
    if not isinstance(body, dict):
        body = {"error": str(body)[:500]}
    if response.status_code == 200:
        return Answer([], 200, body)
    return Answer.refused(response.status_code, body)
