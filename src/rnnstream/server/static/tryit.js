// "Try it": a stream of the picked model stepped from typed values (one /infer per line) or an uploaded CSV
// (/v2/models/{name}/streams/{id}/csv), its outputs charted; for a forecaster (a sidecar `feedback`), a forecast
// cone from that stream (/forecast), its other inputs held at their last values.
"use strict";

const tryState = { stream: null, started: false, records: [], lastInputs: null, cone: null };

function inputSizes() {
  return models.meta.inputs.map((t) => t.shape.slice(1).reduce((a, b) => a * b, 1));
}

function newTryStream() {
  Object.assign(tryState, {
    stream: "try-" + Math.random().toString(36).slice(2, 8), started: false, records: [], lastInputs: null, cone: null,
  });
  $("try-stream").textContent = tryState.stream;
  setStatus("try-status", "");
  setStatus("forecast-status", "");
  live.models.tryPoints = 0;
  live.models.forecastCone = 0;
  drawTry();
}

function resetTry() {
  const sizes = inputSizes();
  const tokens = models.meta.inputs.some((t) => t.datatype.startsWith("INT"));
  $("try-shape").textContent = models.meta.inputs.map((t, i) => `${t.name} (${sizes[i]})`).join(", ") +
    (tokens ? ", token ids" : "") + ", comma-separated";
  const sample = (row) => sizes.map((size) => Array.from({ length: size }, (_, k) =>
    tokens ? String((row + k) % 5) : (Math.sin(row + k) / 2).toFixed(2)).join(", ")).join(", ");
  $("try-values").value = [0, 1, 2].map(sample).join("\n");
  $("try-csv").value = "";
  $("forecast-panel").hidden = models.picked.kind !== "forecaster";
  newTryStream();
}

function setStatus(id, message, error = false) {
  $(id).textContent = message;
  $(id).classList.toggle("error", error);
}

// One typed line as the infer request's inputs, split among the model's inputs in order.
function lineInputs(line, number) {
  const values = line.split(/[,\s]+/).filter((v) => v !== "").map(Number);
  const sizes = inputSizes();
  const total = sizes.reduce((a, b) => a + b, 0);
  if (values.length !== total || values.some((v) => !Number.isFinite(v))) {
    throw new Error(`line ${number} has ${values.length} numbers; each step takes ${total}`);
  }
  let at = 0;
  return models.meta.inputs.map((t, i) => {
    const data = values.slice(at, at + sizes[i]);
    at += sizes[i];
    return { name: t.name, shape: [1, ...t.shape.slice(1)], datatype: t.datatype, data };
  });
}

async function stepTyped() {
  const lines = $("try-values").value.split("\n").map((l) => l.trim()).filter((l) => l);
  const model = models.picked.name;
  try {
    const requests = lines.map((line, i) => lineInputs(line, i + 1));
    for (const inputs of requests) {
      const reply = await api(`/v2/models/${encodeURIComponent(model)}/infer`, {
        inputs, parameters: { sequence_id: tryState.stream, sequence_start: !tryState.started },
      });
      tryState.started = true;
      tryState.lastInputs = Object.fromEntries(inputs.map((t) => [t.name, t.data]));
      const outputs = Object.fromEntries(reply.outputs.map((o) => [o.name, o.data.slice(0, 16)]));
      tryState.records.push({ n: tryState.records.length + 1, outputs, inputs: tryState.lastInputs });
    }
    setStatus("try-status", `${lines.length} steps of ${tryState.stream}; ${tryState.records.length} in all`);
  } catch (error) {
    setStatus("try-status", error.message, true);
  }
  drawTry();
  refreshStreams();
}

async function uploadCsv() {
  const file = $("try-csv").files[0];
  if (!file) return;
  newTryStream();
  const text = await file.text();
  const path = `/v2/models/${encodeURIComponent(models.picked.name)}/streams/${tryState.stream}/csv`;
  try {
    const reply = await api(path, text, { contentType: "text/csv" });
    const names = Object.keys(reply.outputs);
    tryState.records = reply.outputs[names[0]].map((_, i) => ({
      n: i + 1, outputs: Object.fromEntries(names.map((name) => [name, reply.outputs[name][i].slice(0, 16)])),
    }));
    tryState.started = true;
    const rows = text.trim().split("\n");
    try { // the last row's inputs, for a forecast's held inputs (the server has read the file already)
      const last = lineInputs(rows[rows.length - 1], rows.length);
      tryState.lastInputs = Object.fromEntries(last.map((t) => [t.name, t.data]));
    } catch (unreadable) {
      tryState.lastInputs = null;
    }
    setStatus("try-status", `${file.name}: ${reply.steps} steps of ${tryState.stream}`);
  } catch (error) {
    setStatus("try-status", `${file.name}: ${error.message}`, true);
  }
  drawTry();
  refreshStreams();
}

// Which output column feeds back (the first of the sidecar's ``feedback``) and the other inputs, held.
function forecastRequest(horizon, noise) {
  const feedback = models.picked.feedback || {};
  const fed = Object.keys(feedback);
  const exogenous = {};
  for (const t of models.meta.inputs) {
    if (!fed.includes(t.name)) exogenous[t.name] = Array.from({ length: horizon }, () => tryState.lastInputs[t.name]);
  }
  const column = fed.length ? [].concat(feedback[fed[0]])[0] : 0;
  const body = { sequence_id: tryState.stream, horizon, noise, paths: noise > 0 ? 100 : undefined, seed: 0,
    quantiles: [0.05, 0.95] };
  if (Object.keys(exogenous).length) body.exogenous = exogenous;
  return { body, column };
}

async function forecastTry() {
  if (!tryState.started || !tryState.lastInputs) {
    setStatus("forecast-status", "Step the stream first (Step, or a CSV): the forecast starts from its state", true);
    return;
  }
  const horizon = Number($("forecast-horizon").value);
  const { body, column } = forecastRequest(horizon, Number($("forecast-noise").value));
  try {
    const reply = await api(`/v2/models/${encodeURIComponent(models.picked.name)}/forecast`, body);
    const start = tryState.records.length + 1;
    const xs = reply.point.map((_, h) => start + h);
    const band = (q) => reply.quantiles[q].values.map((row) => row[column]);
    tryState.cone = { xs, column, point: reply.point.map((row) => row[column]), lower: band(0), upper: band(1) };
    live.models.forecastCone = xs.length;
    setStatus("forecast-status", `${xs.length} steps ahead from step ${start - 1} of ${tryState.stream}` +
      (reply.paths ? `, ${reply.paths} noisy paths` : ""));
  } catch (error) {
    setStatus("forecast-status", error.message, true);
  }
  drawTry();
}

function drawTry() {
  const series = models.meta ? stepSeries(tryState.records, { inputs: false }) : [];
  const cone = tryState.cone;
  if (cone) {
    series.push({ label: "forecast", xs: cone.xs, ys: cone.point, color: "#d9661f", dash: [6, 4] });
  }
  drawLines($("try-chart"), series.filter((s) => !models.hidden.has(s.label)),
    cone ? { xs: cone.xs, lower: cone.lower, upper: cone.upper } : null);
  $("try-chart").dataset.points = String(tryState.records.length);
  $("try-chart").dataset.cone = String(cone ? cone.xs.length : 0);
  live.models.tryPoints = tryState.records.length;
  drawLegend($("try-legend"), series, models.hidden, drawTry);
}
