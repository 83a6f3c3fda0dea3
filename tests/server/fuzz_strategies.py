"""Hypothesis strategies for what a hostile or careless client sends: near-valid requests of every kind.

Each strategy starts from the shape of a valid request and, in about two cases of three, lets any part go
wrong: wrong types, values out of range for their datatype, huge or negative numbers, unknown names,
nested or ragged lists, missing and extra fields, non-finite values in binary data, ids that are long or
empty. The other cases are valid (the ``valid_*`` strategies), so that refused requests sit beside accepted
ones in the same batches. Sequence ids come from a small pool (``FUZZ_IDS``), so fuzzed requests meet each
other's streams, start them, end them and retry them. Some requests carry a history (history priming: a
time axis ``[1, T, ...]``, or a WebSocket request's ``steps``) and ask for ``sequence_outputs``.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

from hypothesis import strategies as st

MODELS = ["seed", "text", "co2", "identity"]
FUZZ_IDS = [f"fz-{k}" for k in range(6)] + [7, 8]
DATATYPES = ["FP32", "FP64", "FP16", "INT64", "INT32", "INT8", "UINT8", "UINT64", "BOOL"]
INPUTS = {"seed": [("input", [1, 4])], "identity": [("input", [1, 4])], "text": [("chars", [1])],
          "co2": [("co2", [1, 1]), ("calendar", [1, 2])]}

numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.floats(-3.0, 3.0),
    st.integers(-(2**70), 2**70),
    st.integers(-3, 80),
    st.sampled_from([1e39, -1e39, 3.4e38, 2**63, 2**64, -(2**63) - 1, 300, -1, 0.5]),
)
junk = st.one_of(st.none(), st.booleans(), st.text(max_size=8), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
sequence_ids = st.one_of(st.sampled_from(FUZZ_IDS), st.sampled_from(["", 0, -1, True, 2**64, "x" * 300]), junk)


def maybe(strategy: st.SearchStrategy[Any], other: st.SearchStrategy[Any] = junk) -> st.SearchStrategy[Any]:
    """Mostly ``strategy``, sometimes something of the wrong kind."""
    return st.one_of(strategy, strategy, strategy, other)


def tensor_values(count: int) -> st.SearchStrategy[Any]:
    flat = st.lists(numbers, min_size=count, max_size=count)
    return st.one_of(
        flat, flat, flat,
        st.lists(numbers, max_size=count + 2),
        flat.map(lambda values: [values]),  # nested
        st.lists(st.one_of(numbers, st.text(max_size=2), st.none(), st.booleans()), max_size=count + 1),
        st.lists(st.lists(numbers, max_size=3), max_size=3),  # ragged
        junk,
    )


valid_parameters = st.fixed_dictionaries({"sequence_id": st.sampled_from(FUZZ_IDS), "sequence_start": st.booleans()})


@st.composite
def infer_tensor(draw: st.DrawFn, model: str) -> dict[str, Any]:
    choices = INPUTS.get(model, INPUTS["seed"])
    name, shape = draw(st.sampled_from(choices))
    if draw(st.integers(0, 3)) == 0:  # a history of T steps (T = 0 too)
        shape = [1, draw(st.integers(0, 4)), *shape[1:]]
    tensor: dict[str, Any] = {
        "name": draw(maybe(st.just(name), st.text(max_size=6))),
        "shape": draw(maybe(st.just(shape), st.lists(st.integers(-2, 2**40), max_size=3))),
        "datatype": draw(maybe(st.sampled_from(DATATYPES), st.one_of(st.text(max_size=5), junk))),
    }
    count = math.prod(shape)
    if draw(st.integers(0, 9)):
        tensor["data"] = draw(tensor_values(count))
    if draw(st.integers(0, 5)) == 0:
        tensor["parameters"] = draw(maybe(st.fixed_dictionaries({"binary_data_size": st.integers(-1, 64)})))
    return tensor


@st.composite
def sequence_parameters(draw: st.DrawFn) -> Any:
    parameters: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        parameters["sequence_id"] = draw(sequence_ids)
    for flag in ("sequence_start", "sequence_end"):
        if draw(st.booleans()):
            parameters[flag] = draw(maybe(st.booleans()))
    if draw(st.booleans()):
        parameters["sequence_step"] = draw(maybe(st.integers(-1, 6), st.sampled_from([2**63, 1.5, "1"])))
    if draw(st.integers(0, 3)) == 0:
        parameters["sequence_outputs"] = draw(maybe(st.sampled_from(["last", "all"])))
    if draw(st.integers(0, 4)) == 0:
        parameters[draw(st.text(max_size=6))] = draw(junk)
    return draw(maybe(st.just(parameters), st.one_of(st.lists(st.integers(), max_size=2), st.text(max_size=3))))


@st.composite
def infer_request(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """``(model in the path, JSON body)`` of an infer request."""
    model = draw(maybe(st.sampled_from(MODELS), st.sampled_from(["nope", 'x"} 1\n', "seed/versions/2"])))
    count = len(INPUTS.get(model, INPUTS["seed"]))
    body: dict[str, Any] = {
        "inputs": draw(maybe(st.lists(infer_tensor(model), min_size=count, max_size=count),
                             st.lists(infer_tensor(model), max_size=3))),
        "parameters": draw(sequence_parameters()),
    }
    if draw(st.integers(0, 5)) == 0:
        body["outputs"] = draw(maybe(st.lists(st.fixed_dictionaries(
            {"name": st.sampled_from(["output", "logits", "nope"])}), max_size=2)))
    if draw(st.integers(0, 5)) == 0:
        body["id"] = draw(maybe(st.text(max_size=12), st.one_of(st.integers(), st.text(min_size=300))))
    return model, body


@st.composite
def binary_infer_request(draw: st.DrawFn) -> tuple[str, bytes, bytes]:
    """``(model, body, Inference-Header-Content-Length)``: a JSON header and raw tensors after it."""
    model = draw(st.sampled_from(["seed", "identity", "text"]))
    name, shape = INPUTS[model][0]
    datatype = "INT64" if model == "text" else draw(st.sampled_from(["FP32", "FP32", "FP64", "INT32"]))
    size = math.prod(shape) * {"FP32": 4, "FP64": 8, "INT32": 4, "INT64": 8}[datatype]
    header = {"inputs": [{"name": name, "shape": shape, "datatype": datatype,
                          "parameters": {"binary_data_size": draw(st.sampled_from([size, size, size, 0, size + 4]))}}],
              "parameters": draw(st.one_of(valid_parameters, sequence_parameters()))}
    values = draw(st.one_of(
        st.lists(st.floats(width=32), min_size=size // 4, max_size=size // 4).map(
            lambda floats: struct.pack(f"<{len(floats)}f", *floats)),  # NaN and ±Inf included
        st.lists(st.floats(-3, 3, width=32), min_size=size // 4, max_size=size // 4).map(
            lambda floats: struct.pack(f"<{len(floats)}f", *floats)),
        st.binary(min_size=size, max_size=size),
        st.binary(max_size=size + 8),
    )) if datatype != "INT64" else draw(st.one_of(
        st.lists(st.integers(0, 75), min_size=size // 8, max_size=size // 8).map(
            lambda ids: struct.pack(f"<{len(ids)}q", *ids)),
        st.binary(max_size=size + 8),
    ))
    head = json.dumps(header).encode()
    length = draw(st.one_of(st.just(str(len(head)).encode()), st.just(str(len(head)).encode()),
                            st.sampled_from([b"-1", b"99999", b"", "١٢".encode(), b"abc"])))
    return model, head + values, length


@st.composite
def stream_step(draw: st.DrawFn, model: str | None = None) -> dict[str, Any]:
    chosen = model or draw(st.sampled_from(MODELS))
    specs = INPUTS.get(chosen, INPUTS["seed"])
    step: dict[str, Any] = {"sequence_id": draw(sequence_ids)}
    if model is None:
        step["model"] = draw(maybe(st.just(chosen), st.sampled_from(["nope", 'x"} 1\n'])))
    T = 1
    if draw(st.integers(0, 3)) == 0:  # a history of T steps
        step["steps"] = draw(maybe(st.integers(0, 4), st.sampled_from([2**40, -1, 1.5])))
        T = step["steps"] if isinstance(step["steps"], int) and 0 < step["steps"] < 5 else 1
        if draw(st.booleans()):
            step["sequence_outputs"] = draw(maybe(st.sampled_from(["last", "all"])))
    if draw(st.integers(0, 9)):
        if len(specs) == 1 and draw(st.booleans()):
            step["inputs"] = draw(tensor_values(T * math.prod(specs[0][1])))
        else:
            step["inputs"] = draw(maybe(st.fixed_dictionaries(
                {n: tensor_values(T * math.prod(shape)) for n, shape in specs})))
    for flag in ("sequence_start", "sequence_end"):
        if draw(st.booleans()):
            step[flag] = draw(maybe(st.booleans()))
    if draw(st.booleans()):
        step["sequence_step"] = draw(maybe(st.integers(0, 6)))
    if draw(st.booleans()):
        step["id"] = draw(maybe(st.one_of(st.text(max_size=8), st.integers(-5, 5))))
    return step


@st.composite
def stream_message(draw: st.DrawFn) -> str:
    """A WebSocket text message: one step, several, or something that is not a request at all."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.one_of(st.text(max_size=20), st.just("[1, 2]"), st.just('"x"'), st.just("{")))
    if kind <= 3:
        return json.dumps({"requests": draw(maybe(st.lists(stream_step(), max_size=4))),
                           **({"model": draw(st.sampled_from(MODELS))} if draw(st.booleans()) else {})})
    return json.dumps(draw(stream_step()))


@st.composite
def stream_frame(draw: st.DrawFn) -> bytes:
    """A binary WebSocket frame: ``uint32 header length | JSON header | values``."""
    model = draw(st.sampled_from(["seed", "identity", "text", "co2"]))
    entries = draw(st.lists(st.one_of(valid_parameters, valid_parameters, stream_step(model)), max_size=4).map(
        lambda steps: [{k: v for k, v in s.items() if k != "inputs"} for s in steps]))
    record = 8 if model == "text" else 4 * sum(math.prod(shape) for _, shape in INPUTS[model])
    head = json.dumps({"model": draw(maybe(st.just(model))), "requests": draw(maybe(st.just(entries)))}).encode()
    steps = sum(s["steps"] if isinstance(s.get("steps"), int) and 0 < s["steps"] < 5 else 1 for s in entries)
    values = draw(st.one_of(
        st.lists(st.floats(width=32, allow_nan=draw(st.booleans()), allow_infinity=False),
                 min_size=steps * record // 4, max_size=steps * record // 4).map(
            lambda floats: struct.pack(f"<{len(floats)}f", *floats)) if model != "text" else
        st.lists(st.integers(-2, 90), min_size=steps, max_size=steps).map(
            lambda ids: struct.pack(f"<{len(ids)}q", *ids)),
        st.binary(max_size=steps * record + 8),
    ))
    length = draw(st.one_of(st.just(len(head)), st.just(len(head)), st.integers(0, 2**32 - 1)))
    return struct.pack("<I", length) + head + values


@st.composite
def generate_request(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {}
    prompt = draw(st.integers(0, 9))
    if prompt <= 5:
        body["text_input"] = draw(maybe(st.text(alphabet="abcdefgh ROMEO.\n", min_size=1, max_size=40),
                                        st.one_of(st.text(max_size=10), junk)))
    if prompt >= 5:
        body["input_ids"] = draw(maybe(st.lists(st.integers(-2, 90), min_size=1, max_size=20),
                                       st.lists(st.integers(-(2**70), 2**70), max_size=3)))
    parameters: dict[str, Any] = {}
    for key, valid in (("max_tokens", st.integers(1, 16)), ("temperature", st.floats(0, 2)),
                       ("top_k", st.integers(1, 80)), ("top_p", st.floats(0.01, 1.0)), ("seed", st.integers(0, 99))):
        if draw(st.booleans()):
            parameters[key] = draw(maybe(valid, st.one_of(numbers, junk)))
    if draw(st.integers(0, 3)) == 0:
        parameters["stop"] = draw(maybe(st.lists(st.one_of(st.text(max_size=3), st.integers(-1, 80)), max_size=4)))
    if draw(st.integers(0, 6)) == 0:
        parameters[draw(st.text(max_size=5))] = 1
    body["parameters"] = draw(maybe(st.just(parameters)))
    if draw(st.integers(0, 4)) == 0:
        body["id"] = draw(maybe(st.text(max_size=8)))
    return body


@st.composite
def forecast_request(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """``(model, body)``: forecasts from fuzzed streams and from the canaries (a forecast changes nothing)."""
    model = draw(st.sampled_from(["co2", "seed", "identity"]))
    horizon = draw(maybe(st.integers(1, 12), st.one_of(st.integers(-1, 10**7), junk)))
    body: dict[str, Any] = {"sequence_id": draw(st.one_of(sequence_ids, st.sampled_from(["canary-co2-0",
                                                                                           "canary-seed-0"]))),
                            "horizon": horizon}
    rows = horizon if isinstance(horizon, int) and 0 < horizon < 20 else 3
    if draw(st.booleans()):
        body["noise"] = draw(maybe(st.floats(0, 2), st.lists(st.floats(-1, 2), max_size=3)))
    if draw(st.booleans()):
        body["paths"] = draw(maybe(st.integers(1, 50), st.integers(-1, 10**7)))
    if draw(st.booleans()):
        body["seed"] = draw(maybe(st.integers(0, 99)))
    if draw(st.integers(0, 3)):
        width = draw(st.sampled_from([2, 2, 3]))
        exogenous = st.lists(st.lists(numbers, min_size=width, max_size=width), min_size=rows - 1, max_size=rows)
        body["exogenous"] = draw(maybe(st.one_of(st.fixed_dictionaries({"calendar": exogenous}), exogenous)))
    if draw(st.integers(0, 3)) == 0:
        body["feedback"] = draw(maybe(st.dictionaries(st.sampled_from(["co2", "input", "0", "a"]),
                                                      st.one_of(st.integers(-1, 3), st.lists(st.integers(-1, 3)),
                                                                st.dictionaries(st.text(max_size=2), st.integers())),
                                                      max_size=2)))
    if draw(st.booleans()):
        body["quantiles"] = draw(maybe(st.lists(st.floats(-0.5, 1.5), max_size=5)))
    return model, body


# -- valid requests: the accepted neighbours of the broken ones ----------------------------------------

finite = st.floats(-5.0, 5.0, width=32)
valid_ids = st.sampled_from(FUZZ_IDS)


def _values(model: str, name: str, count: int) -> st.SearchStrategy[list[Any]]:
    if model == "text":
        return st.lists(st.integers(0, 75), min_size=count, max_size=count)
    return st.lists(finite, min_size=count, max_size=count)


@st.composite
def valid_infer_request(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    model = draw(st.sampled_from(MODELS))
    T = draw(st.sampled_from([None, None, None, 1, 3]))  # sometimes a history of T steps: [1, T, ...]
    shapes = [(name, shape if T is None else [1, T, *shape[1:]]) for name, shape in INPUTS[model]]
    inputs = [{"name": name, "shape": shape, "datatype": "INT64" if model == "text" else "FP32",
               "data": draw(_values(model, name, math.prod(shape)))} for name, shape in shapes]
    parameters: dict[str, Any] = {"sequence_id": draw(valid_ids), "sequence_start": draw(st.booleans())}
    if T is not None:
        parameters["sequence_outputs"] = draw(st.sampled_from(["last", "all"]))
    if draw(st.integers(0, 5)) == 0:
        parameters["sequence_end"] = True
    if draw(st.integers(0, 2)) == 0:
        parameters["sequence_step"] = 1 if parameters["sequence_start"] else draw(st.integers(1, 8))
    return model, {"inputs": inputs, "parameters": parameters}


@st.composite
def valid_stream_message(draw: st.DrawFn) -> str:
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        model = draw(st.sampled_from(MODELS))
        specs = INPUTS[model]
        values = {name: draw(_values(model, name, math.prod(shape))) for name, shape in specs}
        steps.append({"model": model, "sequence_id": draw(valid_ids), "sequence_start": draw(st.booleans()),
                      "inputs": values if len(specs) > 1 else next(iter(values.values()))})
    return json.dumps(steps[0] if len(steps) == 1 else {"requests": steps})


@st.composite
def valid_generate_request(draw: st.DrawFn) -> dict[str, Any]:
    return {"text_input": draw(st.text(alphabet="abcdefgh ROMEO.\n", min_size=1, max_size=40)),
            "parameters": {"max_tokens": draw(st.integers(1, 16)), "temperature": draw(st.floats(0, 2)),
                           "top_k": draw(st.one_of(st.none(), st.integers(1, 76))),
                           "top_p": draw(st.one_of(st.none(), st.floats(0.05, 1.0))), "seed": draw(st.integers(0, 9))}}


@st.composite
def valid_forecast_request(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    horizon = draw(st.integers(1, 12))
    body: dict[str, Any] = {"sequence_id": draw(st.sampled_from([*FUZZ_IDS, "canary-co2-0"])), "horizon": horizon,
                            "exogenous": {"calendar": draw(st.lists(st.lists(finite, min_size=2, max_size=2),
                                                                    min_size=horizon, max_size=horizon))}}
    if draw(st.booleans()):
        body.update(noise=draw(st.floats(0.01, 1.0)), paths=draw(st.integers(1, 40)), seed=draw(st.integers(0, 9)))
    return "co2", body
