"""One conformance suite, every store: memory://, a real Redis, a real 3-node Redis Cluster, and a Cluster with
replicas under durable acknowledgement (``?replicas=1``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from rnnstream import (
    InputError,
    RnnstreamError,
    StateError,
    StepOrderError,
    StreamLimitError,
    StreamModel,
    StreamNotFoundError,
    Streams,
)
from rnnstream.step_request import StepRequest
from tests.stores.small import inputs, small_model

MakeStreams = Callable[..., Streams]
TOL = {"rtol": 1e-6, "atol": 1e-6}


def solo(model: StreamModel, xs: np.ndarray) -> list[np.ndarray]:
    """The reference: one stream stepped alone through the engine; outputs [T, ...] per output."""
    ys, _ = model.run(xs[None], model.initial_state(1))
    return [y[0] for y in ys]


def assert_output(got: list[np.ndarray], reference: list[np.ndarray], t: int) -> None:
    for g, r in zip(got, reference, strict=True):
        np.testing.assert_allclose(g, r[t], **TOL)


def test_n_streams_together_equal_n_separate_runs(make_streams: MakeStreams, model: StreamModel) -> None:
    streams = make_streams()
    ids = [f"s{i}" for i in range(5)]
    xs = inputs(1, 8, n=5)
    engine_state = model.initial_state(5)
    for t in range(8):
        out = streams.step({sid: xs[i, t] for i, sid in enumerate(ids)})
        engine_y, engine_state = model.step(xs[:, t], engine_state)
        for i, sid in enumerate(ids):  # exactly the engine's batched step
            for k in range(2):
                assert np.array_equal(out[sid][k], engine_y[k][i])
    assert streams.states(ids) == engine_state
    for i, sid in enumerate(ids):  # and each stream equals its own solo run (BLAS may differ by an ulp)
        assert_output(streams.step({sid: xs[i, 0]})[sid], solo(model, np.concatenate([xs[i], xs[i, :1]])), 8)


def test_streams_join_and_leave(make_streams: MakeStreams, model: StreamModel) -> None:
    streams = make_streams()
    xa, xb, xc = inputs(2, 6)[0], inputs(3, 6)[0], inputs(4, 6)[0]
    ra, rb, rc = solo(model, xa), solo(model, xb), solo(model, xc)
    for t in range(3):
        out = streams.step({"a": xa[t], "b": xb[t]})
    assert_output(out["b"], rb, 2)
    streams.close("b")
    out = streams.step({"c": xc[0], "a": xa[3]})  # c joins, b has left
    assert_output(out["a"], ra, 3)
    assert_output(out["c"], rc, 0)
    assert sorted(streams.ids()) == ["a", "c"] and len(streams) == 2 and "b" not in streams
    out = streams.step({"b": xb[0]})  # b returns: a new stream from the initial state
    assert_output(out["b"], rb, 0)


def test_reset(make_streams: MakeStreams, model: StreamModel) -> None:
    streams = make_streams()
    x = inputs(5, 4)[0]
    reference = solo(model, x)
    for t in range(3):
        streams.step({"a": x[t]})
    streams.reset("a")
    assert streams.steps_applied("a") == 0 and "a" in streams
    assert_output(streams.step({"a": x[0]})["a"], reference, 0)
    with pytest.raises(StreamNotFoundError):
        streams.reset("nobody")


def test_fork_leaves_the_source_alone(make_streams: MakeStreams, model: StreamModel) -> None:
    streams = make_streams()
    x, what_if = inputs(6, 6)[0], inputs(7, 3)[0]
    reference = solo(model, x)
    for t in range(3):
        streams.step({"live": x[t]})
    streams.fork("live", "trial")
    branch = solo(model, np.concatenate([x[:3], what_if]))
    for t in range(3):
        assert_output(streams.step({"trial": what_if[t]})["trial"], branch, 3 + t)
    assert streams.steps_applied("trial") == 6
    assert_output(streams.step({"live": x[3]})["live"], reference, 3)
    with pytest.raises(RnnstreamError, match="already exists"):
        streams.fork("live", "trial")
    streams.fork("live", "trial", overwrite=True)
    assert streams.states(["trial"]) == streams.states(["live"])
    with pytest.raises(StreamNotFoundError):
        streams.fork("nobody", "x")


def test_snapshot_and_restore(make_streams: MakeStreams, model: StreamModel) -> None:
    streams = make_streams()
    x = inputs(8, 6)[0]
    reference = solo(model, x)
    for t in range(3):
        streams.step({"a": x[t]}, step_numbers={"a": t + 1})
    saved = streams.snapshot("a")
    streams.step({"a": x[3]})
    streams.step({"a": x[4]})
    streams.restore("a", saved)
    assert streams.steps_applied("a") == 3
    assert_output(streams.step({"a": x[2]}, step_numbers={"a": 3})["a"], reference, 2)  # the retry survives
    assert_output(streams.step({"a": x[3]}, step_numbers={"a": 4})["a"], reference, 3)
    streams.restore("copy", saved)
    assert_output(streams.step({"copy": x[3]})["copy"], reference, 3)
    state_only = streams.states(["a"]).to_bytes()  # plain State bytes restore too, with 0 steps
    streams.restore("plain", state_only)
    assert streams.steps_applied("plain") == 0


def test_restore_refuses_another_models_state(make_streams: MakeStreams) -> None:
    streams = make_streams()
    other = small_model(seed=99)
    with pytest.raises(StateError, match="another model"):
        streams.restore("a", other.initial_state(1).to_bytes())
    with pytest.raises(StateError, match="one-row"):
        streams.restore("a", streams.model.initial_state(2).to_bytes())
    with pytest.raises(StreamNotFoundError):
        streams.snapshot("nobody")


def test_idle_streams_expire_after_ttl(make_streams: MakeStreams) -> None:
    streams = make_streams(ttl=0.3)
    x = inputs(9, 2)[0]
    streams.step({"idle": x[0], "busy": x[0]})
    for _ in range(4):
        time.sleep(0.1)
        streams.step({"busy": x[1]})
    deadline = time.monotonic() + 3.0
    while "idle" in streams.ids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "idle" not in streams and streams.ids() == ["busy"]
    with pytest.raises(StepOrderError, match="new, or expired"):
        streams.step({"idle": x[1]}, step_numbers={"idle": 2})


def test_max_streams_refuses_new_streams_and_steps_none(make_streams: MakeStreams) -> None:
    streams = make_streams(max_streams=2)
    x = inputs(10, 3)[0]
    streams.step({"a": x[0], "b": x[0]})
    with pytest.raises(StreamLimitError, match="max_streams=2"):
        streams.step({"a": x[1], "c": x[1]})
    assert streams.steps_applied("a") == 1 and "c" not in streams  # the failed batch advanced nothing
    streams.step({"a": x[1], "b": x[1]})  # busy streams keep working
    with pytest.raises(StreamLimitError):
        streams.fork("a", "c")
    streams.close("a")
    streams.step({"c": x[0]})
    assert sorted(streams.ids()) == ["b", "c"]


def test_a_stream_that_starts_and_ends_in_one_step_gives_its_room_back(make_streams: MakeStreams) -> None:
    streams = make_streams(max_streams=1)
    x = inputs(12, 1)[0]
    for n, stream_id in enumerate(["a", "b", "c"]):
        [result] = streams.step_each([StepRequest(stream_id, x[0], step_number=1, start=True, end=True)])
        assert not isinstance(result, Exception), (n, result)
    streams.step({"d": x[0]})  # the one slot is free again
    assert streams.ids() == ["d"]


def test_retries_are_exactly_once(make_streams: MakeStreams, model: StreamModel) -> None:
    streams = make_streams()
    x = inputs(11, 4)[0]
    reference = solo(model, x)
    first = streams.step({"a": x[0]}, step_numbers={"a": 1})["a"]
    again = streams.step({"a": x[0]}, step_numbers={"a": 1})["a"]  # a retry: stored output, no advance
    assert all(np.array_equal(f, g) for f, g in zip(first, again, strict=True))
    assert streams.steps_applied("a") == 1
    assert_output(streams.step({"a": x[1]}, step_numbers={"a": 2})["a"], reference, 1)
    assert_output(streams.step({"a": x[1]}, step_numbers={"a": 2})["a"], reference, 1)
    assert_output(streams.step({"a": x[2]}, step_numbers={"a": 3})["a"], reference, 2)


@pytest.mark.parametrize(("number", "expected"), [(5, 3), (1, 3)])
def test_out_of_order_steps_are_refused(make_streams: MakeStreams, number: int, expected: int) -> None:
    streams = make_streams()
    x = inputs(12, 3)[0]
    streams.step({"a": x[0]}, step_numbers={"a": 1})
    streams.step({"a": x[1]}, step_numbers={"a": 2})
    streams.step({"b": x[0]})
    before = streams.states(["a", "b"])
    with pytest.raises(StepOrderError, match=f"takes step number {expected} next") as error:
        streams.step({"b": x[1], "a": x[2]}, step_numbers={"a": number})
    assert error.value.expected == expected and error.value.received == number
    assert streams.states(["a", "b"]) == before and streams.steps_applied("b") == 1


def test_bad_input_names_the_stream_and_steps_none(make_streams: MakeStreams) -> None:
    streams = make_streams()
    x = inputs(13, 2)[0]
    streams.step({"a": x[0]})
    before = streams.states(["a"])
    with pytest.raises(InputError, match="stream 'b'"):
        streams.step({"a": x[1], "b": np.zeros(4, np.float32)})
    with pytest.raises(InputError, match="non-finite"):
        streams.step({"a": x[1], "b": np.full(3, np.nan, np.float32)}, check_finite=True)
    with pytest.raises(InputError, match="step numbers are integers from 1"):
        streams.step({"a": x[1]}, step_numbers={"a": 0})
    with pytest.raises(InputError, match="not stepped in this call"):
        streams.step({"a": x[1]}, step_numbers={"z": 1})
    assert streams.states(["a"]) == before and "b" not in streams
    with pytest.raises(StreamNotFoundError):
        streams.close("b")


def test_threads_lose_and_double_no_step(make_streams: MakeStreams, model: StreamModel) -> None:
    streams = make_streams()
    x = inputs(14, 1)[0, 0]
    per_thread, threads = 15, 4

    def work(k: int) -> None:
        for _ in range(per_thread):
            streams.step({"shared": x, f"own{k}": x})

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    total = per_thread * threads
    assert streams.steps_applied("shared") == total
    _, reference = model.run(np.repeat(x[None, None], total, axis=1), model.initial_state(1))
    np.testing.assert_allclose(streams.states(["shared"]).rows, reference.rows, **TOL)


def test_store_compare_and_set(make_streams: MakeStreams) -> None:
    """The store's write refuses a stale version: two writers cannot both advance from one state."""
    store = make_streams().store
    row = np.ones((1, store.state_size), np.float32)
    out = np.zeros((1, store.output_size), np.float32)
    first = store.load(["k"])
    second = store.load(["k"])  # both writers read the same (absent) version
    assert store.commit(["k"], first.versions, row, np.int64([1]), out).tolist() == [True]
    assert store.commit(["k"], second.versions, 2 * row, np.int64([1]), out).tolist() == [False]
    now = store.load(["k"])
    assert now.rows[0, 0] == 1.0 and now.steps[0] == 1
    assert store.commit(["k"], now.versions, 3 * row, np.int64([2]), out).tolist() == [True]


def test_step_each_isolates_each_requests_error(make_streams: MakeStreams, model: StreamModel) -> None:
    """The server's path: one bad request fails alone; its batch-mates advance."""
    streams = make_streams(max_streams=4)
    x = inputs(15, 3)[0]
    reference = solo(model, x)
    streams.step({"old": x[0], "other": x[0]}, step_numbers={"old": 1})
    nan = np.full(3, np.nan, np.float32)
    results = streams.step_each(
        [
            StepRequest("old", x[1], step_number=2),
            StepRequest("bad-shape", np.zeros(5, np.float32)),
            StepRequest("bad-number", x[0], step_number=3),
            StepRequest("bad-values", nan),
            StepRequest("other", x[1], step_number=7),
            StepRequest("new", x[0]),
        ],
        check_finite=True,
    )
    assert_output(results[0], reference, 1)
    assert isinstance(results[1], InputError) and "bad-shape" in str(results[1])
    assert isinstance(results[2], StepOrderError) and results[2].expected == 1
    assert isinstance(results[3], InputError) and "non-finite" in str(results[3])
    assert isinstance(results[4], StepOrderError) and results[4].expected == 2
    assert_output(results[5], reference, 0)
    assert sorted(streams.ids()) == ["new", "old", "other"] and streams.steps_applied("other") == 1
    limited = streams.step_each([StepRequest("n1", x[0]), StepRequest("n2", x[0]), StepRequest("old", x[2])])
    assert_output(limited[0], reference, 0)  # new streams are admitted in order while there is room:
    assert isinstance(limited[1], StreamLimitError)  # 3 held + n1 = 4, the limit
    assert_output(limited[2], reference, 2)
    assert len(streams) == 4


def test_sequence_start_end_and_unknown_sequences(make_streams: MakeStreams, model: StreamModel) -> None:
    streams = make_streams()
    x = inputs(16, 3)[0]
    reference = solo(model, x)
    (unknown,) = streams.step_each([StepRequest("seq", x[0], must_exist=True)])
    assert isinstance(unknown, StreamNotFoundError) and "seq" not in streams
    for t in range(2):
        streams.step_each([StepRequest("seq", x[t], start=t == 0, must_exist=True)])
    (restarted,) = streams.step_each([StepRequest("seq", x[0], start=True, must_exist=True)])
    assert_output(restarted, reference, 0)  # start means: from the initial state, whatever was there
    (last,) = streams.step_each([StepRequest("seq", x[1], end=True, must_exist=True)])
    assert_output(last, reference, 1)
    assert "seq" not in streams
    with pytest.raises(InputError, match="repeated ids"):
        streams.step_each([StepRequest("a", x[0]), StepRequest("a", x[1])])


def test_an_ended_stream_answers_a_retry_of_its_last_step(make_streams: MakeStreams, model: StreamModel) -> None:
    streams = make_streams()
    x = inputs(17, 3)[0]
    reference = solo(model, x)
    streams.step_each([StepRequest("seq", x[0], step_number=1, start=True, must_exist=True)])
    (last,) = streams.step_each([StepRequest("seq", x[1], step_number=2, end=True, must_exist=True)])
    assert_output(last, reference, 1)
    assert "seq" not in streams and streams.ids() == [] and len(streams) == 0
    (retried,) = streams.step_each([StepRequest("seq", x[1], step_number=2, end=True, must_exist=True)])
    assert all(np.array_equal(a, b) for a, b in zip(last, retried, strict=True))  # the stored output
    (after,) = streams.step_each([StepRequest("seq", x[2], step_number=3, must_exist=True)])
    assert isinstance(after, StreamNotFoundError) and "ended after step 2" in str(after)
    (again,) = streams.step_each([StepRequest("seq", x[0], step_number=1, start=True, must_exist=True)])
    assert_output(again, reference, 0)  # the id begins a new sequence
    assert "seq" in streams and streams.steps_applied("seq") == 1


def test_a_late_start_is_refused_and_a_retried_start_answered(make_streams: MakeStreams, model: StreamModel) -> None:
    streams = make_streams()
    x = inputs(18, 3)[0]
    reference = solo(model, x)
    (first,) = streams.step_each([StepRequest("s", x[0], step_number=1, start=True)])
    (retried,) = streams.step_each([StepRequest("s", x[0], step_number=1, start=True)])
    assert all(np.array_equal(a, b) for a, b in zip(first, retried, strict=True))
    streams.step_each([StepRequest("s", x[1], step_number=2)])
    (late,) = streams.step_each([StepRequest("s", x[0], step_number=1, start=True)])
    assert isinstance(late, StepOrderError) and late.expected == 3 and "late duplicate" in str(late)
    (third,) = streams.step_each([StepRequest("s", x[2], step_number=3)])
    assert_output(third, reference, 2)  # the late start changed nothing



def test_an_ended_record_is_kept_for_the_ttl(make_streams: MakeStreams) -> None:
    streams = make_streams(ttl=0.3)
    x = inputs(20, 1)[0]
    streams.step_each([StepRequest("seq", x[0], step_number=1, start=True, end=True)])
    (retried,) = streams.step_each([StepRequest("seq", x[0], step_number=1, start=True, end=True)])
    assert not isinstance(retried, Exception)
    time.sleep(0.6)
    (later,) = streams.step_each([StepRequest("seq", x[0], step_number=2, must_exist=True)])
    assert isinstance(later, StreamNotFoundError) and "unknown sequence" in str(later)


def test_recent_lists_live_streams_most_recently_written_first(make_streams: MakeStreams) -> None:
    streams = make_streams(ttl=600)
    x = inputs(21, 1)[0]
    for name in ["a", "b", "c", "d"]:
        streams.step({name: x[0]})
        time.sleep(0.003)  # a millisecond apart at least: Redis scores the index in ms
    streams.step({"b": x[0]})
    streams.step_each([StepRequest("d", x[0], end=True)])  # ended: not live, not listed
    assert streams.store.recent(10) == ["b", "c", "a"]
    assert streams.store.recent(2) == ["b", "c"]
