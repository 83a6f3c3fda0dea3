// The rnnstream live page: text streamed token by token (generate_stream, read with fetch), a real series
// replayed into a forecaster with its forecast cone (infer + forecast), and the server's live figures
// (/v2/stats). Plain JS, no framework, no build step. window.rnnstreamLive exposes what is on screen.
"use strict";

const live = {
  text: { lengths: [], tokens: 0, finish: null },
  chart: { points: 0, cone: 0, forecasts: 0 },
  stats: null,
};
window.rnnstreamLive = live;

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const HORIZON = 52; // weeks forecast after each step
const PATHS = 100; // noisy paths behind the cone
const WARMUP = 52; // weeks stepped before the first forecast (the model looks a year back)
const VIEW_WEEKS = 208; // observed weeks on screen

// -- requests, with the bearer token when the server wants one ------------------------------------------

let token = null;
let tokenWanted = null; // resolves when the user gives a token

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function readToken() {
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    token = params.get("token");
    sessionStorage.setItem("rnnstream-token", token);
    params.delete("token"); // keep it out of the address bar, screenshots and history
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
  } else {
    token = sessionStorage.getItem("rnnstream-token");
  }
}

function askForToken() {
  $("auth").hidden = false;
  setServer("error", token ? "the token was refused" : "a bearer token is needed");
  $("token").focus();
  if (!tokenWanted) {
    tokenWanted = new Promise((resolve) => {
      $("auth").addEventListener("submit", (event) => {
        event.preventDefault();
        token = $("token").value.trim();
        sessionStorage.setItem("rnnstream-token", token);
        $("auth").hidden = true;
        tokenWanted = null;
        resolve();
      }, { once: true });
    });
  }
  return tokenWanted;
}

// A request to the server (JSON, or ``contentType`` text), with the token; JSON (or ``raw``: the response) back.
async function api(path, body, { raw = false, signal, contentType = null } = {}) {
  for (;;) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = contentType || "application/json";
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(path, {
      method: body === undefined ? "GET" : "POST",
      headers,
      body: body === undefined || contentType ? body : JSON.stringify(body),
      signal,
    });
    if (response.status === 401) {
      await askForToken();
      continue;
    }
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        message = (await response.json()).error || message;
      } catch (ignored) { /* not JSON: keep the status line */ }
      throw new HttpError(response.status, message);
    }
    return raw ? response : response.json();
  }
}

function setServer(state, text) {
  $("server").dataset.state = state;
  $("server-text").textContent = text;
}

// -- formatting -----------------------------------------------------------------------------------------

function fmtRate(x) {
  if (!x) return "0";
  if (x >= 10000) return (x / 1000).toFixed(1) + "k";
  if (x >= 100) return Math.round(x).toLocaleString("en");
  return x.toFixed(1);
}

function fmtMs(ms) {
  if (!ms) return "–";
  return ms < 1 ? ms.toFixed(2) + " ms" : ms < 100 ? ms.toFixed(1) + " ms" : Math.round(ms) + " ms";
}

// -- text, token by token -------------------------------------------------------------------------------

const text = { model: null, controller: null, queue: "", shown: 0, drawing: false, last: 0 };

// Generate with the token model ``entry`` (one of /v2/stats' models) from now on.
function useTextModel(entry) {
  text.model = entry.name;
  $("text-model").textContent = entry.name;
  $("text-missing").hidden = true;
  $("generate").disabled = Boolean(text.controller);
}

function showTextMissing(message) {
  $("text-missing").hidden = false;
  $("text-missing").textContent = message;
  $("generate").disabled = true;
}

async function generate(event) {
  event.preventDefault();
  if (text.controller || !text.model) return;
  const prompt = $("prompt").value;
  if (!prompt) return;
  const parameters = { max_tokens: Number($("max-tokens").value), temperature: Number($("temperature").value) };
  if ($("seed").value !== "") parameters.seed = Number($("seed").value);
  $("prompt-echo").textContent = prompt;
  $("generated").textContent = "";
  Object.assign(text, { queue: "", shown: 0, controller: new AbortController() });
  Object.assign(live.text, { lengths: [], tokens: 0, finish: null });
  for (const id of ["ttft", "token-rate"]) $(id).textContent = "–";
  $("token-count").textContent = "0";
  $("finish").textContent = "";
  $("output").classList.add("running");
  $("generate").disabled = true;
  $("stop").disabled = false;
  const started = performance.now();
  let first = null;
  let count = 0;
  try {
    const response = await api(`/v2/models/${text.model}/generate_stream`, { text_input: prompt, parameters },
      { raw: true, signal: text.controller.signal });
    await readEvents(response, (reply) => {  // models.js
      if (reply.error) {
        $("finish").textContent = "error: " + reply.error;
        return;
      }
      const now = performance.now();
      if (first === null) {
        first = now;
        $("ttft").textContent = fmtMs(now - started);
      }
      count += 1;
      text.queue += reply.text_output;
      live.text.tokens = count;
      $("token-count").textContent = count.toLocaleString("en");
      if (count > 1) $("token-rate").textContent = fmtRate((count - 1) / ((now - first) / 1000)) + " tokens/s";
      if (reply.finish_reason) {
        live.text.finish = reply.finish_reason;
        $("finish").textContent = reply.finish_reason === "length" ? "reached the token limit" : "stop sequence";
      }
      startDrawing();
    });
  } catch (error) {
    $("finish").textContent = error.name === "AbortError" ? "stopped (the server cancelled the stream)"
      : "error: " + error.message;
  } finally {
    text.controller = null;
    $("generate").disabled = false;
    $("stop").disabled = true;
    startDrawing();
  }
}

function startDrawing() {
  if (text.drawing) return;
  text.drawing = true;
  text.last = performance.now();
  requestAnimationFrame(drawText);
}

// Move queued characters to the screen: all of them ("as generated"), or at the chosen pace.
function drawText(now) {
  const pace = Number($("pace").value);
  const take = pace ? Math.max(1, Math.floor(pace * (now - text.last) / 1000)) : text.queue.length;
  if (take && text.queue) {
    text.last = now;
    const output = $("output");
    const atBottom = output.scrollHeight - output.scrollTop - output.clientHeight < 24;
    $("generated").textContent += text.queue.slice(0, take);
    text.queue = text.queue.slice(take);
    text.shown = $("generated").textContent.length;
    live.text.lengths.push(text.shown);
    output.dataset.length = String(text.shown);
    output.dataset.tokens = String(live.text.tokens);
    if (atBottom) output.scrollTop = output.scrollHeight;
  }
  if (text.queue || text.controller) {
    requestAnimationFrame(drawText);
  } else {
    text.drawing = false;
    $("output").classList.remove("running");
  }
}

// -- a replayed series and its forecast cone ------------------------------------------------------------

const replay = {
  model: null, data: null, times: [], t: 0, sequence: null, run: 0, playing: true, weeksPerSecond: 15,
  onestep: [], cone: null, view: { t: 0, cone: null }, // view: what the chart shows, one consistent tick
};

function showChartMissing(message) {
  $("chart-missing").hidden = false;
  $("chart-missing").textContent = message;
}

function restart() {
  replay.run += 1;
  Object.assign(replay, {
    t: 0, onestep: [], cone: null, view: { t: 0, cone: null }, playing: true,
    sequence: "page-" + Math.random().toString(36).slice(2, 10),
  });
  Object.assign(live.chart, { points: 0, cone: 0, forecasts: 0 });
  $("chart-missing").hidden = true;
  $("play").textContent = "Pause";
  $("play").disabled = false;
  replayLoop(replay.run);
}

async function stepWeek() {
  const t = replay.t;
  const body = {
    inputs: [
      { name: "co2", shape: [1, 1], datatype: "FP32", data: [replay.data.values[t]] },
      { name: "calendar", shape: [1, 2], datatype: "FP32", data: replay.data.calendar[t] },
    ],
    parameters: { sequence_id: replay.sequence, sequence_start: t === 0 },
  };
  const reply = await api(`/v2/models/${replay.model}/infer`, body);
  replay.onestep[t + 1] = reply.outputs[0].data[0]; // the forecast of week t + 1, made after week t
  replay.t = t + 1;
}

async function forecastNow() {
  const t = replay.t; // weeks seen; the forecast starts at week t
  const reply = await api(`/v2/models/${replay.model}/forecast`, {
    sequence_id: replay.sequence, horizon: HORIZON, noise: replay.data.noise, paths: PATHS, seed: t,
    exogenous: { calendar: replay.data.calendar.slice(t, t + HORIZON) },
    quantiles: [0.05, 0.25, 0.75, 0.95],
  });
  const band = (i) => reply.quantiles[i].values.map((row) => row[0]);
  replay.cone = {
    start: t, point: reply.point.map((row) => row[0]), q05: band(0), q25: band(1), q75: band(2), q95: band(3),
  };
  live.chart.forecasts += 1;
}

async function replayLoop(run) {
  const weeks = replay.data.values.length;
  while (run === replay.run) {
    if (!replay.playing) {
      await sleep(100);
      continue;
    }
    if (replay.t >= weeks) {
      replay.playing = false;
      $("play").textContent = "Done";
      $("play").disabled = true;
      return;
    }
    const tick = performance.now();
    try {
      await stepWeek();
      if (replay.t >= WARMUP) await forecastNow();
    } catch (error) {
      if (run !== replay.run) return;
      showChartMissing(`The replay stopped: ${error.message}. Restart to begin again.`);
      replay.playing = false;
      $("play").textContent = "Play";
      return;
    }
    if (run !== replay.run) return;
    replay.view = { t: replay.t, cone: replay.cone && replay.cone.start === replay.t ? replay.cone : null };
    requestAnimationFrame(drawChart);
    const wait = 1000 / replay.weeksPerSecond - (performance.now() - tick);
    if (replay.t >= WARMUP && wait > 0) await sleep(wait);
  }
}

function niceStep(range, ticks) {
  const raw = range / ticks;
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw);
}

function drawChart() {
  const canvas = $("chart");
  const { ctx, width, height } = fitCanvas(canvas);  // charts.js
  const data = replay.data;
  const { t, cone } = replay.view;
  if (!data || t < 2) return;
  const first = Math.max(0, t - VIEW_WEEKS);
  const lastWeek = Math.min(data.dates.length - 1, t - 1 + HORIZON);

  // y range over what is on screen
  let low = Infinity;
  let high = -Infinity;
  const include = (v) => {
    if (Number.isFinite(v)) {
      low = Math.min(low, v);
      high = Math.max(high, v);
    }
  };
  for (let i = first; i < t; i++) include(data.values[i]);
  if (cone) {
    cone.q05.forEach(include);
    cone.q95.forEach(include);
  }
  const pad = Math.max(0.5, (high - low) * 0.06);
  low -= pad;
  high += pad;

  const m = { left: 52, right: 14, top: 14, bottom: 28 };
  const x0 = replay.times[first];
  const x1 = replay.times[lastWeek];
  const X = (i) => m.left + (replay.times[i] - x0) / (x1 - x0) * (width - m.left - m.right);
  const Y = (v) => m.top + (high - v) / (high - low) * (height - m.top - m.bottom);

  // grid and axes
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#8a94a3";
  ctx.strokeStyle = "#edf0f4";
  ctx.lineWidth = 1;
  const step = niceStep(high - low, 6);
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let v = Math.ceil(low / step) * step; v <= high; v += step) {
    const y = Math.round(Y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(m.left, y);
    ctx.lineTo(width - m.right, y);
    ctx.stroke();
    ctx.fillText(v.toFixed(step < 1 ? 1 : 0), m.left - 8, y);
  }
  ctx.textAlign = "left";
  ctx.fillText("ppm", 6, m.top - 2);
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const firstYear = Number(data.dates[first].slice(0, 4)) + 1;
  const lastYear = Number(data.dates[lastWeek].slice(0, 4));
  const every = lastYear - firstYear > 8 ? 2 : 1;
  for (let year = firstYear; year <= lastYear; year += every) {
    const ms = Date.UTC(year, 0, 1);
    const x = m.left + (ms - x0) / (x1 - x0) * (width - m.left - m.right);
    ctx.fillText(String(year), x, height - m.bottom + 8);
    ctx.beginPath();
    ctx.moveTo(Math.round(x) + 0.5, height - m.bottom);
    ctx.lineTo(Math.round(x) + 0.5, height - m.bottom + 4);
    ctx.strokeStyle = "#c9d0d9";
    ctx.stroke();
  }

  // now
  const now = X(t - 1);
  ctx.setLineDash([3, 4]);
  ctx.strokeStyle = "#b7c0cc";
  ctx.beginPath();
  ctx.moveTo(now, m.top);
  ctx.lineTo(now, height - m.bottom);
  ctx.stroke();
  ctx.setLineDash([]);

  // forecast cone: 90 % and 50 % of the paths, and the point forecast, from the last observed week
  if (cone) {
    const band = (lower, upper, fill) => {
      ctx.beginPath();
      ctx.moveTo(now, Y(data.values[t - 1]));
      for (let k = 0; k < cone.point.length && t + k <= lastWeek; k++) ctx.lineTo(X(t + k), Y(upper[k]));
      for (let k = Math.min(cone.point.length, lastWeek - t + 1) - 1; k >= 0; k--) ctx.lineTo(X(t + k), Y(lower[k]));
      ctx.closePath();
      ctx.fillStyle = fill;
      ctx.fill();
    };
    band(cone.q05, cone.q95, "rgba(217, 102, 31, 0.16)");
    band(cone.q25, cone.q75, "rgba(217, 102, 31, 0.30)");
    ctx.beginPath();
    ctx.moveTo(now, Y(data.values[t - 1]));
    for (let k = 0; k < cone.point.length && t + k <= lastWeek; k++) ctx.lineTo(X(t + k), Y(cone.point[k]));
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = "#d9661f";
    ctx.lineWidth = 1.8;
    ctx.stroke();
    ctx.setLineDash([]);
  }

  // one-step forecasts made along the way
  ctx.beginPath();
  let started = false;
  for (let i = Math.max(first, 1); i <= t && i < data.values.length; i++) {
    const v = replay.onestep[i];
    if (v === undefined || i < WARMUP) continue;
    if (started) ctx.lineTo(X(i), Y(v));
    else ctx.moveTo(X(i), Y(v));
    started = true;
  }
  ctx.setLineDash([2, 3]);
  ctx.strokeStyle = "#6d8fbf";
  ctx.lineWidth = 1.4;
  ctx.stroke();
  ctx.setLineDash([]);

  // observed
  ctx.beginPath();
  for (let i = first; i < t; i++) {
    if (i === first) ctx.moveTo(X(i), Y(data.values[i]));
    else ctx.lineTo(X(i), Y(data.values[i]));
  }
  ctx.strokeStyle = "#1d3b66";
  ctx.lineWidth = 1.8;
  ctx.stroke();
  ctx.fillStyle = "#1d3b66";
  ctx.beginPath();
  ctx.arc(now, Y(data.values[t - 1]), 3.5, 0, 2 * Math.PI);
  ctx.fill();

  live.chart.points = t;
  live.chart.cone = cone ? cone.point.length : 0;
  Object.assign(canvas.dataset, { points: String(t), cone: String(live.chart.cone), forecasts: String(live.chart.forecasts) });
  $("week-date").textContent = data.dates[t - 1];
  $("week-observed").textContent = data.values[t - 1].toFixed(2) + " ppm";
  const next = replay.onestep[t];
  $("week-forecast").textContent = next === undefined ? "–" : next.toFixed(2) + " ppm";
}

// -- live figures ---------------------------------------------------------------------------------------

function renderStats(stats) {
  live.stats = stats;
  const sum = (key) => stats.models.reduce((total, model) => total + model[key], 0);
  const tiles = {
    "tile-streams": [sum("active_streams"), (v) => v.toLocaleString("en")],
    "tile-steps": [sum("steps_per_second"), fmtRate],
    "tile-tokens": [sum("tokens_per_second"), fmtRate],
    "tile-generations": [stats.generations, (v) => v.toLocaleString("en")],
  };
  for (const [id, [value, format]] of Object.entries(tiles)) {
    $(id).textContent = format(value);
    $(id).dataset.value = String(value);
  }
  const busiest = [...stats.models].sort((a, b) => b.engine_calls_per_second - a.engine_calls_per_second)[0];
  const latency = $("tile-latency");
  if (busiest && busiest.engine_calls_per_second > 0) {
    latency.textContent = `${fmtMs(busiest.step_p50_ms)} / ${fmtMs(busiest.step_p99_ms)}`;
    latency.dataset.value = String(busiest.step_p99_ms);
  } else {
    latency.textContent = "–";
    latency.dataset.value = "0";
  }
  $("window").textContent = String(stats.window_seconds);
  const rows = stats.models.map((model) => {
    const cells = [
      model.name, model.kind, model.active_streams.toLocaleString("en"), fmtRate(model.steps_per_second),
      fmtRate(model.engine_calls_per_second), `${fmtMs(model.step_p50_ms)} / ${fmtMs(model.step_p99_ms)}`,
      fmtMs(model.wait_p99_ms), model.active_generations.toLocaleString("en"), fmtRate(model.tokens_per_second),
      `${fmtMs(model.token_step_p50_ms)} / ${fmtMs(model.token_step_p99_ms)}`,
    ];
    const row = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      td.textContent = cell;
      if (cell === "0" || cell === "–" || cell === "– / –") td.className = "idle";
      row.appendChild(td);
    }
    return row;
  });
  $("models").replaceChildren(...rows);
  $("stats-updated").textContent = "updated " + new Date().toLocaleTimeString("en-GB");
}

async function pollStats() {
  for (;;) {
    try {
      renderStats(await api("/v2/stats"));
      syncModels(live.stats);
      setServer("ready", `serving ${live.stats.models.map((m) => m.name).join(", ")}`);
    } catch (error) {
      setServer("error", "server unreachable: " + error.message);
    }
    await sleep(1000);
  }
}

// -- start ------------------------------------------------------------------------------------------------

async function start() {
  readToken();
  $("prompt-form").addEventListener("submit", generate);
  $("stop").addEventListener("click", () => text.controller && text.controller.abort());
  $("temperature").addEventListener("input", () => {
    $("temperature-value").textContent = Number($("temperature").value).toFixed(2);
  });
  $("speed").addEventListener("change", () => { replay.weeksPerSecond = Number($("speed").value); });
  $("play").addEventListener("click", () => {
    if (!replay.data) return;
    if (!replay.playing && !$("chart-missing").hidden) return restart();
    replay.playing = !replay.playing;
    $("play").textContent = replay.playing ? "Pause" : "Play";
  });
  $("restart").addEventListener("click", () => replay.data && restart());
  window.addEventListener("resize", () => requestAnimationFrame(drawChart));

  let stats;
  for (;;) {
    try {
      stats = await api("/v2/stats");
      break;
    } catch (error) {
      setServer("error", "server unreachable: " + error.message);
      await sleep(2000);
    }
  }
  renderStats(stats);
  setServer("ready", `serving ${stats.models.map((m) => m.name).join(", ")}`);
  pollStats();
  setupModels(stats);

  const textModel = stats.models.find((m) => m.kind === "tokens" && m.vocabulary);
  if (textModel) {
    useTextModel(textModel);
  } else {
    const idsOnly = stats.models.filter((m) => m.kind === "tokens").map((m) => m.name);
    showTextMissing("This server serves no token model with a vocabulary" +
      (idsOnly.length ? ` (${idsOnly.join(", ")} take token ids: step them in “Try it” above, or use ` +
        "generate_stream with input_ids)" : "") +
      ". Serve a token model with a vocabulary sidecar (<model>.json with \"tokens\"), or the bundled model `text`.");
  }

  try {
    replay.data = await api("/demo/co2.json");
  } catch (error) {
    const forecasters = stats.models.filter((m) => m.kind === "forecaster").map((m) => m.name);
    const parts = ["chart-sub", "chart-readout", "chart-wrap", "chart-legend", "chart-controls"];
    for (const id of parts) $(id).hidden = true;
    showChartMissing(error.message + (forecasters.length ? `. Pick ${forecasters.join(" or ")} under “Your ` +
      "models” to forecast from its streams." : "."));
    $("play").disabled = true;
    $("restart").disabled = true;
    return;
  }
  $("stats-card").before($("models-card")); // the bundled demos first; every model's card after them
  replay.model = replay.data.model;
  replay.times = replay.data.dates.map((d) => Date.parse(d + "T00:00:00Z"));
  $("chart-model").textContent = replay.model;
  replay.weeksPerSecond = Number($("speed").value);
  restart();
}

document.addEventListener("DOMContentLoaded", start);
