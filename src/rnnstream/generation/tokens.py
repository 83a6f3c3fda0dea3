"""Generation: many streams sampling tokens together, one batched engine call per token.

Each ``step()``:

1. feeds every generating stream the token it sampled at the previous step: one engine call;
2. primes the streams added since (their prompts: one ``run``, or one batched pass of steps);
3. samples one token per stream from its scores, with its own rules and its own seeded generator,
   and returns them as :class:`TokenEvent` s. A stream that samples a stop token or reaches
   ``max_tokens`` finishes: its last token is returned but never fed, so its state has consumed
   the prompt and every token but the last (to continue the text, start the next prompt with it).

Streams join (``add``) and leave (``cancel``) between steps, from any thread; ``stream`` is the async
form a server uses: every client's tokens come from the same batched steps, run off the event loop.

>>> import rnnstream
>>> model = rnnstream.load(rnnstream.demo.TEXT_MODEL)
>>> vocab = rnnstream.demo.text_vocabulary()
>>> generation = Generation(model)
>>> generation.add("a", vocab.encode("KING."), max_tokens=5, temperature=0)
>>> generation.add("b", vocab.encode("Enter"), max_tokens=3, seed=1)
>>> events = []
>>> while generation:
...     events += generation.step()
>>> [e.stream_id for e in events], events[-1].finish
(['a', 'b', 'a', 'b', 'a', 'b', 'a', 'a'], 'length')
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Collection
from typing import NamedTuple

import numpy as np

from rnnstream.errors import InputError, RnnstreamError, StreamLimitError
from rnnstream.generation.engines import ModelEngine, StreamsEngine, TokenModel
from rnnstream.generation.rows import Rows, TokenRequest
from rnnstream.generation.sampling import Sampling, draw, probabilities
from rnnstream.model import StreamModel
from rnnstream.state import State
from rnnstream.streams import Streams
from rnnstream.types import FloatArray

PRIME_CHUNK = 256
"""Prompt tokens a joining stream runs per step: a longer prompt is primed over several steps, so one long
prompt never holds up the other streams' tokens for longer than this many steps of its own."""

logger = logging.getLogger(__name__)


class ReaderLagError(RnnstreamError):
    """A stream's reader left ``limit`` tokens unread while the generation went on; the stream was cancelled."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class TokenEvent(NamedTuple):
    """One token of one stream. ``position`` counts from 0; ``finish`` is None while the stream goes on,
    ``"stop"`` (a stop token), ``"length"`` (``max_tokens`` reached) or ``"error"`` (``error`` says why,
    and ``token`` is -1) when this is its last event."""

    stream_id: str
    token: int
    position: int
    finish: str | None = None
    error: RnnstreamError | None = None


class Generation:
    """Token streams over ``target``: a StreamModel (states kept here) or a Streams (states in its store).

    ``outputs`` (``"auto"``, ``"logits"``, ``"probabilities"``) and ``output``: see
    :class:`~rnnstream.generation.engines.TokenModel`.
    """

    def __init__(self, target: StreamModel | Streams, *, outputs: str = "auto", output: int | str | None = None):
        if isinstance(target, Streams):
            self.tokens = TokenModel(target.model, outputs=outputs, output=output)
            self._engine: ModelEngine | StreamsEngine = StreamsEngine(self.tokens, target)
        else:
            self.tokens = TokenModel(target, outputs=outputs, output=output)
            self._engine = ModelEngine(self.tokens)
        self._active = Rows()  # in the engine's order
        self._joining: list[TokenRequest] = []
        self._priming: list[TokenRequest] = []  # long prompts, primed a chunk per step before they join
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()  # guards _joining, _cancelled and the set of known ids
        self._stepping = threading.Lock()
        self._known: set[str] = set()
        self._queues: dict[str, asyncio.Queue[TokenEvent | BaseException]] = {}  # async readers, by stream
        self._buffers: dict[str, int] = {}  # the readers' max_buffer
        self._driver: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        """Streams generating or waiting to start."""
        with self._lock:
            return len(self._known)

    def __repr__(self) -> str:
        return f"Generation({self.tokens.model.name!r}, streams={len(self)})"

    def add(
        self,
        stream_id: str,
        prompt: object,
        *,
        max_tokens: int,
        stop: Collection[int] = (),
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        state: State | None = None,
        restart: bool = False,
    ) -> None:
        """Start ``stream_id``: its prompt is primed and its first token sampled at the next ``step``.

        ``seed`` seeds this stream's own generator (None: fresh entropy). ``state``: a one-row State to
        start from (StreamModel targets; default the initial state). ``restart``: with a Streams target,
        start the stream afresh instead of continuing its stored state.
        """
        if not isinstance(stream_id, str) or not stream_id:
            raise InputError(f"stream ids are non-empty strings, got {stream_id!r}")
        ids = self.tokens.check_prompt(prompt, stream_id)
        rule = Sampling(temperature, top_k, top_p)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int | np.integer) or max_tokens < 1:
            raise InputError(f"stream {stream_id!r}: max_tokens must be a positive integer, got {max_tokens!r}")
        stops = frozenset(int(t) for t in stop)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0):
            raise InputError(f"stream {stream_id!r}: seed must be a non-negative integer or None, got {seed!r}")
        if state is not None:
            if isinstance(self._engine, StreamsEngine):
                raise InputError("a Streams target keeps its states in its store; start from one with restore()")
            self.tokens.model.check_state(state)
            if state.batch_size != 1:
                raise InputError(f"stream {stream_id!r}: state has {state.batch_size} rows; give a one-row State")
        request = TokenRequest(stream_id, ids, rule, int(max_tokens), stops, np.random.default_rng(seed),
                           start=state, restart=restart)
        with self._lock:
            if stream_id in self._known:
                raise InputError(f"stream {stream_id!r} is already generating; cancel it or use another id")
            self._known.add(stream_id)
            self._joining.append(request)

    def cancel(self, stream_id: str) -> None:
        """Stop generating for ``stream_id`` (it leaves at the next step); unknown ids are ignored."""
        with self._lock:
            if stream_id in self._known:
                self._cancelled.add(stream_id)

    def state(self, stream_id: str) -> State:
        """The current state of a generating stream (StreamModel targets; a Streams keeps its own)."""
        if not isinstance(self._engine, ModelEngine):
            raise InputError("with a Streams target, read states from it: streams.states([stream_id])")
        return self._engine.row(stream_id)

    def step(self) -> list[TokenEvent]:
        """Feed, prime, sample: one token for every stream (see the module docstring)."""
        if not self._stepping.acquire(blocking=False):
            raise RnnstreamError("Generation.step is already running in another thread; steps take turns")
        try:
            return self._step()
        finally:
            self._stepping.release()

    def _step(self) -> list[TokenEvent]:
        with self._lock:
            joining, self._joining = self._joining, []
            cancelled, self._cancelled = self._cancelled, set()
        joining = [r for r in self._priming + joining if r.stream_id not in cancelled]
        if cancelled:
            self._leave({i for i, r in enumerate(self._active.requests) if r.stream_id in cancelled})
        events = self._warm([r for r in joining if len(r.prompt) - r.primed > PRIME_CHUNK])
        long = [r for r in joining if len(r.prompt) - r.primed > PRIME_CHUNK]
        self._priming = [r for r in long if r.stream_id in self._known]  # those whose chunk failed have left
        joining = [r for r in joining if len(r.prompt) - r.primed <= PRIME_CHUNK]
        fed, feed_events = self._feed()
        joined, join_events = self._join(joining)
        events += feed_events + join_events
        self._forget(cancelled)
        if not len(self._active):
            return events
        return events + self._sample(np.concatenate(fed + joined))

    def _feed(self) -> tuple[list[FloatArray], list[TokenEvent]]:
        """Feed every active stream the token it sampled last: their scores; or, if the engine fails, none, an
        error event for each stream, and the streams gone."""
        active = self._active
        if not len(active):
            return [], []
        try:
            return [self._engine.feed(active.pending)], []
        except Exception as error:  # the engine failed for every stream: each hears why
            events = self._fail(active.requests, active.produced.tolist(), error)
            self._leave(set(range(len(active))))
            return [], events

    def _join(self, joining: list[TokenRequest]) -> tuple[list[FloatArray], list[TokenEvent]]:
        """Prime the prompts of ``joining`` and make them active: their first scores, and an error event for
        each stream that could not join."""
        if not joining:
            return [], []
        try:
            scores = [self._prime(joining)]
            self._active.append(joining)
            return scores, []
        except Exception as error:  # one prompt's failure is that stream's own: the others go without it
            if self._can_retry_alone(error):
                return self._join_one_by_one(joining)
            events = self._fail(joining, [0] * len(joining), error)
            self._forget({r.stream_id for r in joining})
            return [], events

    def _join_one_by_one(self, joining: list[TokenRequest]) -> tuple[list[FloatArray], list[TokenEvent]]:
        """``_join`` with a prime per prompt: a prompt that fails leaves without the others."""
        scores: list[FloatArray] = []
        events: list[TokenEvent] = []
        for request in joining:
            try:
                scores.append(self._prime([request]))
                self._active.append([request])
            except Exception as error:
                events += self._fail([request], [0], error)
                self._forget({request.stream_id})
        return scores, events

    def _sample(self, scores: FloatArray) -> list[TokenEvent]:
        """A token for every active stream from its ``scores (n, V)``; the streams that finish leave."""
        active = self._active
        p = probabilities(scores, active.rules)  # (n, V)
        greedy = active.rules.T == 0
        tokens = draw(p, greedy, active.next_uniforms(np.flatnonzero(~greedy)))  # (n,)
        active.pending = tokens
        active.produced += 1
        done = active.produced >= active.limit
        stopped = [i for i in active.stopping if int(tokens[i]) in active.requests[i].stop]
        finish: list[str | None] = ["length" if d else None for d in done.tolist()]
        for i in stopped:
            finish[i] = "stop"
        events = [TokenEvent(r.stream_id, t, n - 1, f) for r, t, n, f in
                  zip(active.requests, tokens.tolist(), active.produced.tolist(), finish, strict=True)]
        self._leave(set(np.flatnonzero(done).tolist()) | set(stopped))
        return events

    def _prime(self, joining: list[TokenRequest]) -> FloatArray:
        """Run the rest of each prompt and add the streams to the engine's order: their first scores."""
        ids = [r.stream_id for r in joining]
        prompts = [r.prompt[r.primed :] for r in joining]
        if isinstance(self._engine, StreamsEngine):
            return self._engine.prime(ids, prompts, [r.restart for r in joining])
        return self._engine.prime(ids, prompts, [r.start for r in joining])

    def _can_retry_alone(self, error: Exception) -> bool:
        """Whether the prompts of a failed prime can be run again one by one. A model engine's prime changes
        nothing until it succeeds; a Streams engine's writes each position as it goes, and only its first
        can fail on ``max_streams`` (new streams start there) before anything was written."""
        return isinstance(self._engine, ModelEngine) or isinstance(error, StreamLimitError)

    def _warm(self, long: list[TokenRequest]) -> list[TokenEvent]:
        """Run the next ``PRIME_CHUNK`` tokens of each prompt that is longer than that, without sampling: a
        long prompt is primed over several steps, and the other streams get a token at each of them."""
        if not long:
            return []
        try:
            chunks = [r.prompt[r.primed : r.primed + PRIME_CHUNK] for r in long]
            if isinstance(self._engine, StreamsEngine):
                self._engine.advance([r.stream_id for r in long], chunks, [r.restart for r in long])
                for request in long:
                    request.restart = False
            else:
                for request, state in zip(long, self._engine.advance(chunks, [r.start for r in long]), strict=True):
                    request.start = state
        except Exception as error:
            self._forget({r.stream_id for r in long})
            return self._fail(long, [0] * len(long), error)
        for request in long:
            request.primed += PRIME_CHUNK
        return []

    def _fail(self, requests: list[TokenRequest], produced: list[int], error: Exception) -> list[TokenEvent]:
        if not isinstance(error, RnnstreamError):
            logger.exception("token generation failed for %d stream(s)", len(requests), exc_info=error)
            error = RnnstreamError(f"internal error while generating: {error!r}")
        return [TokenEvent(r.stream_id, -1, n, "error", error) for r, n in zip(requests, produced, strict=True)]

    def _leave(self, leaving: set[int]) -> None:
        if not leaving:
            return
        keep = [i for i in range(len(self._active)) if i not in leaving]
        self._engine.drop(keep)
        self._forget({self._active.requests[i].stream_id for i in leaving})
        self._active.keep(keep)

    def _forget(self, ids: set[str]) -> None:
        if ids:
            with self._lock:
                self._known -= ids

    # -- async: one driver task runs the steps on a worker thread; each stream reads its own queue ------

    async def stream(
        self, stream_id: str, prompt: object, *, max_buffer: int | None = None, **options: object
    ) -> AsyncIterator[TokenEvent]:
        """Add ``stream_id`` (``options`` as for :meth:`add`) and yield its tokens as they are sampled.

        Every stream of this Generation shares the batched steps, which run on a worker thread
        (``asyncio.to_thread``), never on the event loop. Leaving the loop early cancels the stream; an
        engine error ends it by raising that error. ``max_buffer``: a reader that leaves this many tokens
        unread while the generation goes on (a client that does not read) is cancelled, and raises
        ReaderLagError once it reads them.
        """
        if stream_id in self._queues:
            raise InputError(f"stream {stream_id!r} is already generating; cancel it or use another id")
        queue: asyncio.Queue[TokenEvent | BaseException] = asyncio.Queue()
        self._queues[stream_id] = queue  # before add: the driver may step as soon as the stream joins
        if max_buffer is not None:
            self._buffers[stream_id] = max_buffer
        try:
            self.add(stream_id, prompt, **options)  # type: ignore[arg-type]
        except BaseException:
            del self._queues[stream_id]
            raise
        if self._driver is None or self._driver.done():
            self._driver = asyncio.get_running_loop().create_task(self._drive())
        done = False
        try:
            while not done:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item.error is not None:
                    raise item.error
                done = item.finish is not None
                yield item
        finally:
            self._queues.pop(stream_id, None)
            self._buffers.pop(stream_id, None)
            if not done:
                self.cancel(stream_id)

    async def _drive(self) -> None:
        """Step while any stream generates; hand each event to its stream's queue."""
        while len(self):
            try:
                events = await asyncio.to_thread(self.step)
            except Exception as error:  # not a stream's own error (those are events): every reader hears it
                for queue in self._queues.values():
                    queue.put_nowait(error)
                return
            for event in events:
                reader = self._queues.get(event.stream_id)
                if reader is None:
                    continue
                limit = self._buffers.get(event.stream_id)
                if limit is not None and reader.qsize() >= limit and event.finish is None:
                    self.cancel(event.stream_id)  # the reader is this far behind: it is cut, not buffered
                    del self._buffers[event.stream_id]
                    del self._queues[event.stream_id]  # later events of the stream go nowhere
                    reader.put_nowait(ReaderLagError(
                        f"stream {event.stream_id!r} was cancelled: its reader left {limit} tokens unread "
                        "(a client that does not read its events)", limit=limit))
                    continue
                reader.put_nowait(event)
