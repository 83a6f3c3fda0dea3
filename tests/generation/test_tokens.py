"""Token generation: Generation over a StreamModel and over Streams equals a manual step loop."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import rnnstream
from rnnstream import Generation, InputError, Sampling, State, StreamLimitError, StreamModel, Streams
from rnnstream.generation.engines import TokenModel
from rnnstream.generation.sampling import probabilities, sample
from rnnstream.generation.tokens import PRIME_CHUNK, ReaderLagError
from tests.generation.models import token_model

PROMPTS = {"a": [1, 2, 3], "b": [4], "c": [5, 6, 7, 8, 9, 1], "d": [2, 2]}
RULES = {"a": Sampling(0.0), "b": Sampling(1.0), "c": Sampling(0.7, top_k=4), "d": Sampling(1.2, top_p=0.8)}
SEEDS = {"a": 0, "b": 1, "c": 2, "d": 3}


def manual(model: StreamModel, prompt: list[int], n: int, rule: Sampling, seed: int,
           stop: frozenset[int] = frozenset()) -> tuple[list[int], State]:
    """The generation loop written out with model.step: prime, then sample and feed back."""
    rng = np.random.default_rng(seed)
    state = model.initial_state(1)
    for t in prompt:
        y, state = model.step(np.array([t]), state)
    tokens: list[int] = []
    while True:
        token = int(sample(y, rule, [rng])[0])  # type: ignore[arg-type]
        tokens.append(token)
        if token in stop or len(tokens) == n:
            return tokens, state
        y, state = model.step(np.array([token]), state)


def run(generation: Generation) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    while generation:
        for event in generation.step():
            assert event.error is None
            out.setdefault(event.stream_id, []).append(event.token)
    return out


def add_all(generation: Generation, lengths: dict[str, int]) -> None:
    for i, prompt in PROMPTS.items():
        r = RULES[i]
        generation.add(i, prompt, max_tokens=lengths[i], temperature=r.temperature, top_k=r.top_k, top_p=r.top_p,
                       seed=SEEDS[i])


LENGTHS = {"a": 7, "b": 12, "c": 1, "d": 9}


@pytest.mark.parametrize("target", ["model", "streams"])
def test_generation_equals_the_manual_step_loop(target: str) -> None:
    model = token_model()
    source: StreamModel | Streams = model if target == "model" else Streams(model)
    generation = Generation(source)
    add_all(generation, LENGTHS)
    got = run(generation)
    for i in PROMPTS:
        want, _ = manual(model, PROMPTS[i], LENGTHS[i], RULES[i], SEEDS[i])
        assert got[i] == want, i


def test_long_generations_draw_one_uniform_per_token_from_their_own_generator() -> None:
    model = token_model()
    generation = Generation(model)
    generation.add("long", [1, 2], max_tokens=300, temperature=1.1, seed=8)  # several blocks of uniforms
    generation.add("greedy", [3], max_tokens=100, temperature=0, seed=9)
    generation.add("short", [4], max_tokens=70, top_k=3, seed=10)
    got = run(generation)
    assert got["long"] == manual(model, [1, 2], 300, Sampling(1.1), 8)[0]
    assert got["greedy"] == manual(model, [3], 100, Sampling(0.0), 9)[0]
    assert got["short"] == manual(model, [4], 70, Sampling(top_k=3), 10)[0]


def test_streams_keep_the_prompt_and_every_token_but_the_last() -> None:
    model = token_model()
    streams = Streams(model)
    got = run_streams(streams)
    for i in PROMPTS:
        _, want = manual(model, PROMPTS[i], LENGTHS[i], RULES[i], SEEDS[i])
        assert streams.steps_applied(i) == len(PROMPTS[i]) + len(got[i]) - 1
        np.testing.assert_allclose(streams.states([i]).rows, want.rows, atol=1e-6)


def run_streams(streams: Streams) -> dict[str, list[int]]:
    generation = Generation(streams)
    add_all(generation, LENGTHS)
    return run(generation)


def test_a_stream_generates_the_same_alone_or_with_others() -> None:
    model = token_model()
    alone = Generation(model)
    alone.add("c", PROMPTS["c"], max_tokens=15, temperature=0.9, seed=5)
    crowd = Generation(model)
    for k in range(6):
        crowd.add(f"other{k}", [k + 1] * (k + 1), max_tokens=3 + 4 * k, seed=k)
    crowd.add("c", PROMPTS["c"], max_tokens=15, temperature=0.9, seed=5)
    assert run(alone)["c"] == run(crowd)["c"]


def test_streams_join_and_leave_between_steps() -> None:
    model = token_model()
    generation = Generation(model)
    generation.add("early", [1, 2], max_tokens=10, seed=1)
    first = [e.token for e in generation.step()] + [e.token for e in generation.step()]
    generation.add("late", [3], max_tokens=4, seed=2)
    generation.cancel("early")
    rest = run(generation)
    assert list(rest) == ["late"]
    assert first == manual(model, [1, 2], 10, Sampling(), 1)[0][:2]
    assert rest["late"] == manual(model, [3], 4, Sampling(), 2)[0]


def test_stop_tokens_end_a_stream_and_are_returned() -> None:
    model = token_model()
    free = manual(model, [1, 2, 3], 40, Sampling(), 9)[0]
    stop = free[5]
    first = free.index(stop)
    generation = Generation(model)
    generation.add("s", [1, 2, 3], max_tokens=40, stop=[stop], seed=9)
    events = [e for _ in range(first + 1) for e in generation.step()]
    assert [e.token for e in events] == free[: first + 1]
    assert events[-1].finish == "stop" and all(e.finish is None for e in events[:-1])
    assert not generation and [e.position for e in events] == list(range(first + 1))


def test_max_tokens_ends_with_length() -> None:
    generation = Generation(token_model())
    generation.add("s", [1], max_tokens=3, temperature=0)
    events = [e for _ in range(3) for e in generation.step()]
    assert [e.finish for e in events] == [None, None, "length"] and not generation


def test_a_single_prompt_is_primed_with_one_run() -> None:
    model = token_model()
    runs: list[tuple[int, ...]] = []
    real_run = model.run

    def counting_run(xs: object, state: State, **kwargs: bool) -> object:
        runs.append(np.shape(xs))
        return real_run(xs, state, **kwargs)  # type: ignore[arg-type]

    model.run = counting_run  # type: ignore[assignment, method-assign]
    tokens = list(rnnstream.generate(model, [1, 2, 3, 4], max_tokens=5, seed=0))
    assert runs == [(1, 4)]
    assert tokens == manual(model, [1, 2, 3, 4], 5, Sampling(), 0)[0]


def test_the_state_of_a_generating_stream() -> None:
    model = token_model()
    start = model.step(np.array([7]), model.initial_state(1))[1]
    generation = Generation(model)
    generation.add("s", [1, 2], max_tokens=3, seed=4, state=start)
    tokens = [e.token for e in generation.step()]
    want = model.run(np.array([[1, 2]]), start)[1]
    assert generation.state("s") == want
    tokens += [e.token for e in generation.step()]
    assert generation.state("s") == model.step(np.array([tokens[0]]), want)[1]


def test_softmax_outputs_are_detected_and_sampled_as_probabilities(rng: np.random.Generator) -> None:
    logits = token_model(softmax=False)
    probs = token_model(softmax=True)
    assert TokenModel(logits).kind == "logits" and TokenModel(probs).kind == "probabilities"
    assert TokenModel(probs, outputs="logits").kind == "logits"
    ys, _ = logits.run(np.array([[1, 2, 3]]), logits.initial_state(1))
    ps, _ = probs.run(np.array([[1, 2, 3]]), probs.initial_state(1))
    from rnnstream.generation.sampling import probabilities

    np.testing.assert_allclose(probabilities(TokenModel(probs).scores(ps[:, -1]), Sampling(0.6, top_k=5)),
                               probabilities(TokenModel(logits).scores(ys[:, -1]), Sampling(0.6, top_k=5)), atol=1e-6)
    greedy = {"max_tokens": 20, "temperature": 0.0}
    assert list(rnnstream.generate(probs, [1, 2, 3], **greedy)) == list(rnnstream.generate(logits, [1, 2, 3], **greedy))


def test_many_prompts_with_one_seed_are_reproducible_and_differ() -> None:
    model = token_model()
    prompts = {f"s{i}": [1, 2] for i in range(4)}
    first = list(rnnstream.generate(model, prompts, max_tokens=8, seed=3))
    assert first == list(rnnstream.generate(model, prompts, max_tokens=8, seed=3))
    by_stream = {i: [step[i] for step in first] for i in prompts}
    assert len({tuple(v) for v in by_stream.values()}) > 1  # one seed, but each stream its own generator


def test_generate_over_streams_continues_stored_streams() -> None:
    model = token_model()
    streams = Streams(model)
    streams.step({"a": np.int64(5)})
    out = list(rnnstream.generate(streams, {"a": [1, 2]}, max_tokens=4, seed={"a": 1}))
    rng_free = Generation(model)
    start = model.step(np.array([5]), model.initial_state(1))[1]
    rng_free.add("a", [1, 2], max_tokens=4, seed=1, state=start)
    assert [step["a"] for step in out] == run(rng_free)["a"]
    assert streams.steps_applied("a") == 1 + 2 + 3  # the first step, the prompt, every token but the last
    list(rnnstream.generate(streams, {"a": [1, 2]}, max_tokens=4, seed={"a": 1}))
    assert streams.steps_applied("a") == 1 + 2 + 3 + 2 + 3  # continued from the stored state
    fresh = Generation(streams)
    fresh.add("a", [1, 2], max_tokens=4, seed=1, restart=True)
    restarted = run(fresh)["a"]
    assert streams.steps_applied("a") == 2 + 3
    assert restarted == manual(model, [1, 2], 4, Sampling(), 1)[0]


def test_agenerate_equals_generate() -> None:
    model = token_model()

    async def collect() -> tuple[list[int], list[dict[str, int]]]:
        one = [t async for t in rnnstream.agenerate(model, [3, 1], max_tokens=6, seed=2)]
        many = [s async for s in rnnstream.agenerate(model, {"x": [1], "y": [2, 3]}, max_tokens=4, seed=5)]
        return one, many

    one, many = asyncio.run(collect())
    assert one == list(rnnstream.generate(model, [3, 1], max_tokens=6, seed=2))
    assert many == list(rnnstream.generate(model, {"x": [1], "y": [2, 3]}, max_tokens=4, seed=5))


def test_async_clients_share_one_batched_step_per_token() -> None:
    model = token_model()
    generation = Generation(model)
    steps = 0
    real_step = generation.step

    def counting_step() -> list[rnnstream.TokenEvent]:
        nonlocal steps
        steps += 1
        return real_step()

    generation.step = counting_step  # type: ignore[method-assign]

    async def client(i: int) -> list[int]:
        return [e.token async for e in generation.stream(f"c{i}", [i + 1, 2], max_tokens=10, seed=i)]

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(client(i) for i in range(8)))

    got = asyncio.run(main())
    assert got == [manual(model, [i + 1, 2], 10, Sampling(), i)[0] for i in range(8)]
    assert steps <= 12  # ten tokens each, together: not 8 × 10 steps
    assert not generation


def test_leaving_an_async_stream_early_cancels_it() -> None:
    generation = Generation(token_model())

    async def main() -> list[int]:
        tokens = []
        async for event in generation.stream("s", [1], max_tokens=50, seed=0):
            tokens.append(event.token)
            if len(tokens) == 3:
                break
        await asyncio.sleep(0.05)
        return tokens

    assert len(asyncio.run(main())) == 3
    generation.step()
    assert not generation


def test_an_engine_error_ends_only_the_streams_it_touched() -> None:
    streams = Streams(token_model(), max_streams=1)
    generation = Generation(streams)
    generation.add("a", [1], max_tokens=2, seed=0)
    generation.add("b", [2], max_tokens=2, seed=0)
    events = generation.step()  # both prompts at once exceed max_streams; each alone, "a" fits
    assert [(e.stream_id, e.finish, type(e.error)) for e in events] == [
        ("b", "error", StreamLimitError), ("a", None, type(None))]
    assert len(generation) == 1 and len(streams) == 1
    generation.cancel("a")
    generation.step()
    streams.close("a")
    with pytest.raises(StreamLimitError):
        list(rnnstream.generate(streams, {"a": [1], "b": [2]}, max_tokens=2))


@pytest.mark.parametrize(
    ("prompt", "kwargs", "message"),
    [
        ([], {}, "non-empty"),
        ("hello", {}, "text"),
        ([1, 99], {}, "out of range"),
        ([1.5], {}, "integer token ids"),
        ([1], {"max_tokens": 0}, "max_tokens"),
        ([1], {"seed": -1}, "seed"),
        ([1], {"temperature": -1.0}, "temperature"),
    ],
)
def test_bad_requests_are_refused_and_change_nothing(prompt: object, kwargs: dict[str, object], message: str) -> None:
    generation = Generation(token_model())
    options: dict[str, object] = {"max_tokens": 3, **kwargs}
    with pytest.raises(InputError, match=message):
        generation.add("s", prompt, **options)  # type: ignore[arg-type]
    assert not generation and generation.step() == []


def test_a_stream_id_generates_once_at_a_time() -> None:
    generation = Generation(token_model())
    generation.add("s", [1], max_tokens=3)
    with pytest.raises(InputError, match="already generating"):
        generation.add("s", [2], max_tokens=3)


def test_models_that_are_not_token_models_are_refused() -> None:
    seed_model = rnnstream.load(rnnstream.demo.SEED_MODEL)
    with pytest.raises(InputError, match=r"rnnstream\.forecast"):
        Generation(seed_model)
    with pytest.raises(InputError, match="stream id"):
        rnnstream.generate(Streams(token_model()), [1, 2], max_tokens=2)


@pytest.mark.parametrize("target", ["model", "streams"])
def test_a_long_prompt_is_primed_a_chunk_per_step_and_the_others_keep_their_tokens(target: str) -> None:
    model = token_model()
    long = np.random.default_rng(3).integers(0, 12, PRIME_CHUNK * 2 + 10)
    generation = Generation(model if target == "model" else Streams(model))
    generation.add("short", [1], max_tokens=6, temperature=0)
    generation.step()
    generation.add("long", long, max_tokens=1, temperature=0)
    steps = [generation.step() for _ in range(3)]  # 256 prompt tokens; 256, the last 10 and a token; done
    assert [[e.stream_id for e in events] for events in steps] == [["short"], ["short", "long"], ["short"]]
    ys, _ = model.run(long[None], model.initial_state(1))  # the whole prompt at once
    assert steps[1][1].token == int(np.argmax(np.asarray(ys)[0, -1]))


def test_a_huge_top_k_keeps_every_token() -> None:
    scores = np.log(np.float32([[0.2, 0.3, 0.5]]))
    np.testing.assert_allclose(probabilities(scores, Sampling(0.8, top_k=2**63)), probabilities(scores, Sampling(0.8)))


def test_a_reader_that_falls_behind_is_cancelled_and_told_why() -> None:
    generation = Generation(token_model())

    async def main() -> tuple[int, str]:
        stream = generation.stream("slow", [1], max_buffer=3, max_tokens=50, temperature=0)
        first = await stream.__anext__()  # then it reads nothing while the generation goes on
        await asyncio.sleep(0.3)
        seen = 1
        try:
            async for _ in stream:
                seen += 1
        except ReaderLagError as error:
            return seen, str(error)
        return seen, f"finished at {first}"

    seen, message = asyncio.run(main())
    assert seen <= 5 and "left 3 tokens unread" in message
    assert not generation
