"""Where generating streams keep their states: explicit rows of a StreamModel, or a Streams store.

A :class:`~rnnstream.generation.tokens.Generation` drives one engine. ``prime`` runs new streams' prompts
(one ``run``, or one batched pass of steps when their lengths differ) and adds them at the end of the
engine's order; ``feed`` steps every stream of that order with one token each, in one engine call;
``drop`` forgets streams that finished. Scores come back as ``[n, V]`` float64 logits.
"""

from __future__ import annotations

import numpy as np

from rnnstream.errors import InputError, StateError, StreamNotFoundError
from rnnstream.model import Outputs, StreamModel
from rnnstream.state import State
from rnnstream.streams import Streams
from rnnstream.types import FloatArray, IntArray


class TokenModel:
    """A StreamModel checked to be a token model: one input of token ids, one ``[V]`` output of scores.

    ``kind`` says what the output is: ``"probabilities"`` (its last layer is a softmax) or ``"logits"``
    (anything else, e.g. a Dense without activation, or a log-softmax); ``outputs="logits"`` or
    ``"probabilities"`` overrides the detection. ``output`` picks one output (name or index) of a model
    that has several.

    >>> import rnnstream
    >>> TokenModel(rnnstream.load(rnnstream.demo.TEXT_MODEL)).kind
    'logits'
    """

    def __init__(self, model: StreamModel, *, outputs: str = "auto", output: int | str | None = None) -> None:
        if not isinstance(model, StreamModel):
            raise InputError(f"expected a StreamModel (rnnstream.load), got {type(model).__name__}")
        inputs = model.inputs
        if len(inputs) != 1 or inputs[0].spec.dtype != "int64" or inputs[0].spec.shape != ():
            described = ", ".join(f"{s.name} {s.spec.describe()}" for s in inputs)
            raise InputError(
                f"token generation needs a model with one input of token ids, (B, T) int64 (an Embedding "
                f"input); {model.name!r} has {described}. For real-valued inputs use rnnstream.forecast"
            )
        self.model = model
        self.index = output_index(model, output)
        spec = model.output_specs[self.index]
        if len(spec.shape) != 1 or spec.dtype != "float32":
            raise InputError(
                f"output {model.output_names[self.index]!r} is {spec.describe()}; token generation needs one "
                "score per token, (B, V) at each step"
            )
        self.vocabulary = spec.shape[0]
        self.kind = _output_kind(model, self.index) if outputs == "auto" else outputs
        if self.kind not in ("logits", "probabilities"):
            raise InputError(f"outputs must be 'auto', 'logits' or 'probabilities', got {outputs!r}")
        self.input_vocabulary = model.token_ranges.get(inputs[0].name)
        if self.input_vocabulary is not None and self.input_vocabulary < self.vocabulary:
            raise InputError(
                f"the model scores {self.vocabulary} tokens but its Embedding takes ids below "
                f"{self.input_vocabulary}: a sampled token could not be fed back"
            )

    def scores(self, outputs: Outputs) -> FloatArray:
        """The chosen output as float64 logits ``[n, V]`` (log-probabilities for a softmax output)."""
        y = outputs[self.index] if isinstance(outputs, list) else outputs
        s = np.asarray(y, np.float64)
        if self.kind == "probabilities":
            with np.errstate(divide="ignore"):
                s = np.log(s)
        return s

    def check_prompt(self, prompt: object, stream_id: str) -> IntArray:
        """The prompt as int64 ids ``[T]``, T ≥ 1, each a valid input id; else InputError."""
        if isinstance(prompt, str | bytes):
            raise InputError(
                f"stream {stream_id!r}: the prompt is text; generation takes token ids "
                "(encode text with a Vocabulary, e.g. rnnstream.demo.text_vocabulary().encode(text))"
            )
        ids = np.asarray(prompt)
        if ids.ndim != 1 or ids.size == 0 or (ids.dtype.kind not in "iu" and ids.size):
            raise InputError(
                f"stream {stream_id!r}: a prompt is a non-empty 1-D sequence of integer token ids, "
                f"got shape {ids.shape} dtype {ids.dtype}"
            )
        top = self.input_vocabulary
        bad = (ids < 0) | (ids >= top) if top is not None else ids < 0
        if np.any(bad):
            expected = f"ids 0..{top - 1}" if top is not None else "ids ≥ 0"
            raise InputError(
                f"stream {stream_id!r}: prompt token {int(ids[bad][0])} at position {int(np.argmax(bad))} "
                f"is out of range (this model takes {expected})"
            )
        return ids.astype(np.int64)


class ModelEngine:
    """Each generating stream's state as a row of one State, in this engine's order."""

    def __init__(self, tokens: TokenModel) -> None:
        self.tokens = tokens
        self.ids: list[str] = []
        self.state: State | None = None

    def prime(self, ids: list[str], prompts: list[IntArray], starts: list[State | None]) -> FloatArray:
        model = self.tokens.model
        rows = State.concat([s if s is not None else model.initial_state(1) for s in starts])
        lengths = {len(p) for p in prompts}
        if len(lengths) == 1:  # one run over the whole batch of prompts
            ys, rows = model.run(np.stack(prompts), rows)
            last = _last_step(ys)
        else:  # one batched pass: at position t, step the streams whose prompt is that long
            last_rows: list[FloatArray] = [np.zeros(0)] * len(ids)
            own = np.array(rows.rows)  # (n, S), ours to write
            for t in range(max(lengths)):
                live = [i for i, p in enumerate(prompts) if len(p) > t]
                x = np.array([prompts[i][t] for i in live])  # (b,)
                y, stepped = model.step(x, State.adopt(own[live], model.fingerprint))
                own[live] = stepped.rows
                chosen = self.tokens.scores(y)
                for j, i in enumerate(live):
                    if len(prompts[i]) == t + 1:
                        last_rows[i] = chosen[j]
            self._append(ids, State.adopt(own, model.fingerprint))
            return np.stack(last_rows)
        self._append(ids, rows)
        return self.tokens.scores(last)

    def advance(self, prompts: list[IntArray], starts: list[State | None]) -> list[State]:
        """Run ``prompts`` (all of one length) from ``starts`` without adding them: each one's new state."""
        model = self.tokens.model
        rows = State.concat([s if s is not None else model.initial_state(1) for s in starts])
        _, rows = model.run(np.stack(prompts), rows)
        return [rows.select([i]) for i in range(len(prompts))]

    def _append(self, ids: list[str], rows: State) -> None:
        self.state = rows if self.state is None else State.concat([self.state, rows])
        self.ids.extend(ids)

    def feed(self, tokens: IntArray) -> FloatArray:
        if self.state is None:
            raise StateError("no stream is generating: nothing to feed")
        y, self.state = self.tokens.model.step(tokens, self.state)
        return self.tokens.scores(y)

    def drop(self, keep: list[int]) -> None:
        if len(keep) == len(self.ids):
            return
        self.ids = [self.ids[i] for i in keep]
        self.state = self.state.select(keep) if self.state is not None and keep else None

    def row(self, stream_id: str) -> State:
        if self.state is None or stream_id not in self.ids:
            raise StreamNotFoundError(f"no stream {stream_id!r} is generating here")
        return self.state.select(self.ids.index(stream_id))


class StreamsEngine:
    """Generating streams are streams of a :class:`~rnnstream.Streams`: states stay in its store."""

    def __init__(self, tokens: TokenModel, streams: Streams) -> None:
        self.tokens = tokens
        self.streams = streams
        self.ids: list[str] = []

    def prime(self, ids: list[str], prompts: list[IntArray], restart: list[bool]) -> FloatArray:
        for stream_id, fresh in zip(ids, restart, strict=True):
            if fresh and stream_id in self.streams:
                self.streams.close(stream_id)
        last: dict[str, FloatArray] = {}
        for t in range(max(len(p) for p in prompts)):  # one batched pass over every prompt
            step = {i: p[t] for i, p in zip(ids, prompts, strict=True) if len(p) > t}
            out = self.streams.step(step)
            for i, p in zip(ids, prompts, strict=True):
                if len(p) == t + 1:
                    last[i] = self.tokens.scores(_batch(out[i]))[0]
        self.ids.extend(ids)
        return np.stack([last[i] for i in ids])

    def advance(self, ids: list[str], prompts: list[IntArray], restart: list[bool]) -> None:
        """Step ``prompts`` (all of one length) into the streams ``ids`` without adding them to the order."""
        for stream_id, fresh in zip(ids, restart, strict=True):
            if fresh and stream_id in self.streams:
                self.streams.close(stream_id)
        for t in range(len(prompts[0])):
            self.streams.step({i: p[t] for i, p in zip(ids, prompts, strict=True)})

    def feed(self, tokens: IntArray) -> FloatArray:
        out = self.streams.step(dict(zip(self.ids, tokens, strict=True)))
        outputs = [out[i] for i in self.ids]
        if isinstance(outputs[0], list):
            return self.tokens.scores([np.stack([o[k] for o in outputs]) for k in range(len(outputs[0]))])
        return self.tokens.scores(np.stack(outputs))

    def drop(self, keep: list[int]) -> None:
        self.ids = [self.ids[i] for i in keep]


def _batch(y: Outputs) -> Outputs:
    return [a[None] for a in y] if isinstance(y, list) else y[None]


def _last_step(ys: Outputs) -> Outputs:
    return [a[:, -1] for a in ys] if isinstance(ys, list) else ys[:, -1]


def output_index(model: StreamModel, output: int | str | None) -> int:
    names = model.output_names
    if output is None:
        if len(names) > 1:
            raise InputError(f"{model.name!r} has outputs {list(names)}; say which one scores tokens (output=...)")
        return 0
    if isinstance(output, str):
        if output not in names:
            raise InputError(f"no output {output!r}; this model's outputs are {list(names)}")
        return names.index(output)
    if isinstance(output, bool) or not isinstance(output, int) or not 0 <= output < len(names):
        raise InputError(f"output must be a name or an index below {len(names)}, got {output!r}")
    return output


def _output_kind(model: StreamModel, index: int) -> str:
    """``"probabilities"`` when the layer making the output is a softmax (through identities), else logits."""
    graph = model.graph
    producer = {t: node for node in graph.nodes for t in node.outputs}
    tensor = graph.outputs[index]
    while tensor in producer:
        layer = producer[tensor].layer
        if getattr(layer, "activation_name", None) == "softmax":
            return "probabilities"
        if layer.kind != "identity":
            return "logits"
        tensor = producer[tensor].inputs[0]
    return "logits"
