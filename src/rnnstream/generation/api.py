"""``generate`` and ``agenerate``: token generation in one call, for one stream or many.

- ``generate(model, prompt_ids, max_tokens=...)`` yields one stream's token ids as they are sampled.
- ``generate(model_or_streams, {id: prompt_ids, ...}, max_tokens=...)`` yields, per batched step, a dict
  of the tokens the streams produced at that step (streams that finished drop out).
- ``agenerate`` is the same as an async iterator; each step runs on a worker thread.

A single prompt is primed with one ``run``; many prompts with one batched pass. ``seed`` seeds a
single stream's generator directly; with many streams each stream's generator is seeded from
``(seed, stream id)``, or give a dict of seeds by id.

>>> import rnnstream
>>> model = rnnstream.load(rnnstream.demo.TEXT_MODEL)
>>> vocab = rnnstream.demo.text_vocabulary()
>>> ids = list(generate(model, vocab.encode("First Citizen.\\n"), max_tokens=20, temperature=0.5, seed=0))
>>> len(ids), ids == list(generate(model, vocab.encode("First Citizen.\\n"), max_tokens=20, temperature=0.5, seed=0))
(20, True)
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Collection, Iterator, Mapping
from typing import Any, overload

from rnnstream.errors import InputError
from rnnstream.generation.tokens import Generation, TokenEvent
from rnnstream.model import StreamModel
from rnnstream.state import State
from rnnstream.streams import Streams


@overload
def generate(target: StreamModel | Streams, prompt: Mapping[str, Any], *, max_tokens: int,
             stop: Collection[int] = ..., temperature: float = ..., top_k: int | None = ..., top_p: float | None = ...,
             seed: int | Mapping[str, int] | None = ..., state: State | None = ..., outputs: str = ...,
             output: int | str | None = ...) -> Iterator[dict[str, int]]: ...


@overload
def generate(target: StreamModel, prompt: Any, *, max_tokens: int, stop: Collection[int] = ...,
             temperature: float = ..., top_k: int | None = ..., top_p: float | None = ...,
             seed: int | Mapping[str, int] | None = ..., state: State | None = ..., outputs: str = ...,
             output: int | str | None = ...) -> Iterator[int]: ...


def generate(
    target: StreamModel | Streams,
    prompt: Any,
    *,
    max_tokens: int,
    stop: Collection[int] = (),
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | Mapping[str, int] | None = None,
    state: State | None = None,
    outputs: str = "auto",
    output: int | str | None = None,
) -> Iterator[int] | Iterator[dict[str, int]]:
    """Sample up to ``max_tokens`` tokens after ``prompt``, yielding them as they come.

    ``prompt``: token ids (one stream of a StreamModel) or ``{stream_id: ids}`` (many streams; with a
    Streams target these are its stream ids, which continue from their stored states). ``stop``: ids
    that end a stream (the stop token is yielded). ``temperature`` 0 is greedy; ``top_k``, ``top_p``
    filter the distribution (see :mod:`rnnstream.generation.sampling`). ``state``: a one-row State to
    start a single StreamModel stream from. Bad arguments raise InputError before anything runs.
    """
    generation, single = _start(target, prompt, max_tokens=max_tokens, stop=stop, temperature=temperature,
                                top_k=top_k, top_p=top_p, seed=seed, state=state, outputs=outputs, output=output)
    if single:
        return (event.token for events in _steps(generation) for event in events)
    return ({e.stream_id: e.token for e in events} for events in _steps(generation) if events)


def _steps(generation: Generation) -> Iterator[list[TokenEvent]]:
    while generation:
        events = generation.step()
        for event in events:
            if event.error is not None:
                raise event.error
        yield events


async def agenerate(
    target: StreamModel | Streams,
    prompt: Any,
    *,
    max_tokens: int,
    stop: Collection[int] = (),
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | Mapping[str, int] | None = None,
    state: State | None = None,
    outputs: str = "auto",
    output: int | str | None = None,
) -> AsyncIterator[Any]:
    """:func:`generate` as an async iterator: each batched step runs off the event loop.

    Yields ints for a single prompt, ``{stream_id: token}`` per step for a dict of prompts.

    >>> import asyncio, rnnstream
    >>> model = rnnstream.load(rnnstream.demo.TEXT_MODEL)
    >>> async def first_three():
    ...     return [t async for t in agenerate(model, [1, 2], max_tokens=3, temperature=0)]
    >>> asyncio.run(first_three()) == list(generate(model, [1, 2], max_tokens=3, temperature=0))
    True
    """
    generation, single = _start(target, prompt, max_tokens=max_tokens, stop=stop, temperature=temperature,
                                top_k=top_k, top_p=top_p, seed=seed, state=state, outputs=outputs, output=output)
    while generation:
        events = await asyncio.to_thread(generation.step)
        for event in events:
            if event.error is not None:
                raise event.error
        if single:
            for event in events:
                yield event.token
        elif events:
            yield {e.stream_id: e.token for e in events}


def _start(
    target: StreamModel | Streams,
    prompt: Any,
    *,
    seed: int | Mapping[str, int] | None,
    state: State | None,
    outputs: str,
    output: int | str | None,
    **options: Any,
) -> tuple[Generation, bool]:
    generation = Generation(target, outputs=outputs, output=output)
    if not isinstance(prompt, Mapping):
        if isinstance(target, Streams):
            raise InputError("a Streams target generates by stream id: pass {stream_id: prompt_ids}")
        if isinstance(seed, Mapping):
            raise InputError("one prompt takes one seed (an int), not a dict of seeds")
        generation.add("0", prompt, seed=seed, state=state, **options)
        return generation, True
    if state is not None:
        raise InputError("state= starts a single stream; for many streams use a Generation and add() each")
    if not prompt:
        raise InputError("no prompts given: pass {stream_id: prompt_ids, ...} with at least one stream")
    if isinstance(seed, Mapping):
        unknown = sorted(set(seed) - set(prompt))
        if unknown:
            raise InputError(f"seeds are given for streams {unknown} that have no prompt")
    for stream_id, ids in prompt.items():
        generation.add(stream_id, ids, seed=stream_seed(seed, stream_id), **options)
    return generation, False


def stream_seed(seed: int | Mapping[str, int] | None, stream_id: str) -> int | None:
    """The seed of ``stream_id``'s generator: ``seed[stream_id]``, or one derived from ``(seed, stream_id)``.

    >>> stream_seed(7, "a") == stream_seed(7, "a") != stream_seed(7, "b")
    True
    """
    if seed is None:
        return None
    if isinstance(seed, Mapping):
        return seed.get(stream_id)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, a dict of them by stream id, or None; got {seed!r}")
    digest = hashlib.sha256(f"{seed}:{stream_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")
