// The models card: a picker of every served model, the chosen model's active streams (most recent first,
// /v2/models/{name}/streams) and a live chart of a picked stream's inputs and outputs as its steps arrive
// (/v2/models/{name}/streams/{id}/watch, Server-Sent Events read with fetch so the bearer token goes along).
"use strict";

const models = {
  entries: [], picked: null, meta: null, watch: { stream: null, controller: null, records: [] }, listing: 0,
  hidden: new Set(), // labels of the lines hidden from the charts (click their legend entry)
};
live.models = { picked: null, kind: null, streams: [], watched: null, watchPoints: 0, tryPoints: 0, forecastCone: 0 };

const KIND_LABEL = { tokens: "token model", forecaster: "forecaster", values: "values" };

function describeTensors(tensors) {
  return tensors.map((t) => `${t.name} [${t.shape.slice(1).join("×")}] ${t.datatype}`).join(", ");
}

function fillPicker(entries) {
  models.entries = entries;
  $("model-picker").replaceChildren(...entries.map((m) => {
    const option = document.createElement("option");
    option.value = m.name;
    option.textContent = `${m.name} · ${KIND_LABEL[m.kind] || m.kind}`;
    return option;
  }));
}

// Models loaded or unloaded since (a model repository): the picker follows, keeping the chosen model if served.
function syncModels(stats) {
  const names = (entries) => entries.map((m) => m.name).join("\n");
  if (!models.picked || names(stats.models) === names(models.entries)) return;
  fillPicker(stats.models);
  if (stats.models.some((m) => m.name === models.picked.name)) $("model-picker").value = models.picked.name;
  else if (stats.models.length) pickModel(stats.models[0].name);
}

function setupModels(stats) {
  fillPicker(stats.models);
  const picker = $("model-picker");
  picker.addEventListener("change", () => pickModel(picker.value));
  $("try-step").addEventListener("click", stepTyped);
  $("try-new").addEventListener("click", newTryStream);
  $("try-csv").addEventListener("change", uploadCsv);
  $("forecast-run").addEventListener("click", forecastTry);
  window.addEventListener("resize", () => { drawWatch(); drawTry(); });
  if (stats.models.length) pickModel(stats.models[0].name);
  pollStreams();
}

async function pickModel(name) {
  const entry = models.entries.find((m) => m.name === name);
  models.picked = entry;
  $("model-picker").value = name;
  $("model-kind").textContent = KIND_LABEL[entry.kind] || entry.kind;
  Object.assign(live.models, { picked: name, kind: entry.kind, streams: [] });
  stopWatch();
  models.hidden.clear();
  $("stream-list").replaceChildren();
  try {
    models.meta = await api(`/v2/models/${encodeURIComponent(name)}`);
  } catch (error) {
    $("model-io").textContent = `Cannot read the model's metadata: ${error.message}`;
    return;
  }
  $("model-io").textContent = `inputs ${describeTensors(models.meta.inputs)} → outputs ` +
    describeTensors(models.meta.outputs) + ` · state ${models.meta.parameters.state_size.toLocaleString("en")} floats`;
  if (entry.kind === "tokens" && entry.vocabulary) useTextModel(entry);
  resetTry();
  refreshStreams();
}

// -- active streams -------------------------------------------------------------------------------------

async function refreshStreams() {
  const model = models.picked;
  if (!model) return;
  const ask = ++models.listing;
  let listed;
  try {
    listed = await api(`/v2/models/${encodeURIComponent(model.name)}/streams?limit=20`);
  } catch (error) {
    $("stream-hint").hidden = false;
    $("stream-hint").textContent = "Cannot list the streams: " + error.message;
    return;
  }
  if (ask !== models.listing || model !== models.picked) return; // another model was picked meanwhile
  live.models.streams = listed.streams.map((s) => s.id);
  $("stream-count").textContent = listed.count ? `${listed.count.toLocaleString("en")} live` : "";
  $("stream-hint").hidden = listed.streams.length > 0;
  const list = $("stream-list");
  list.dataset.count = String(listed.streams.length);
  list.replaceChildren(...listed.streams.map((s) => {
    const item = document.createElement("li");
    item.dataset.stream = s.id;
    if (s.id === models.watch.stream) item.className = "watched";
    const button = document.createElement("button");
    button.type = "button";
    const id = document.createElement("span");
    id.textContent = s.id;
    const steps = document.createElement("span");
    steps.className = "steps";
    steps.textContent = `${s.steps.toLocaleString("en")} step${s.steps === 1 ? "" : "s"}`;
    button.append(id, steps);
    button.addEventListener("click", () => watchStream(s.id));
    item.appendChild(button);
    return item;
  }));
}

async function pollStreams() {
  for (;;) {
    await sleep(1500);
    await refreshStreams();
  }
}

// -- the watched stream -------------------------------------------------------------------------------

function stopWatch() {
  if (models.watch.controller) models.watch.controller.abort();
  models.watch = { stream: null, controller: null, records: [] };
  live.models.watched = null;
  live.models.watchPoints = 0;
  $("watch-title").textContent = "pick a stream";
  $("watch-chart").dataset.stream = "";
  drawWatch();
}

// Each ``data:`` event of a Server-Sent Events response, parsed, to ``onData``, until it ends or is aborted.
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (block.startsWith("data: ")) onData(JSON.parse(block.slice(6)));
    }
  }
}

async function watchStream(stream) {
  stopWatch();
  const model = models.picked.name;
  const watch = { stream, controller: new AbortController(), records: [], before: 0 };
  models.watch = watch;
  live.models.watched = stream;
  $("watch-title").textContent = `${stream} · waiting for its next step`;
  $("watch-chart").dataset.stream = stream;
  for (const item of $("stream-list").children) item.className = item.dataset.stream === stream ? "watched" : "";
  try {
    const path = `/v2/models/${encodeURIComponent(model)}/streams/${encodeURIComponent(stream)}/watch?steps=200`;
    const response = await api(path, undefined, { raw: true, signal: watch.controller.signal });
    await readEvents(response, (data) => {
      if (data.steps === undefined) {
        watch.before = data.steps_applied; // steps applied before the watch began: numbering goes on from there
        return;
      }
      for (const step of data.steps) watch.records.push({ ...step, n: watch.before + step.n });
      watch.records = watch.records.slice(-200);
      live.models.watchPoints += data.steps.length;
      const last = watch.records[watch.records.length - 1].n;
      const skipped = data.dropped ? ` (${data.dropped} steps skipped)` : "";
      $("watch-title").textContent = `${stream} · step ${last}${skipped}`;
      const listed = [...$("stream-list").children].find((item) => item.dataset.stream === stream);
      if (listed) listed.querySelector(".steps").textContent = `${last.toLocaleString("en")} steps`;
      requestAnimationFrame(drawWatch);
    });
  } catch (error) {
    if (error.name !== "AbortError" && models.watch === watch) {
      $("watch-title").textContent = `${stream}: ${error.message}`;
    }
  }
}

function drawWatch() {
  const series = stepSeries(models.watch.records);
  drawLines($("watch-chart"), series.filter((s) => !models.hidden.has(s.label)));
  $("watch-chart").dataset.points = String(models.watch.records.length);
  drawLegend($("watch-legend"), series, models.hidden, drawWatch);
}
