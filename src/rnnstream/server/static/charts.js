// Line charts for the models card: series of (step, value) points on a canvas, an optional shaded band
// (a forecast's 5-95 % of paths), and their legend. Plain canvas, no library.
"use strict";

const PALETTE = ["#1d3b66", "#d9661f", "#1f9d55", "#8e44ad", "#c8322f", "#2a9bb5", "#7a8594", "#b8860b"];

function fitCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height };
}

// The x and y ranges over every finite point of the series and the band, padded a little.
function extent(series, band) {
  const box = { x0: Infinity, x1: -Infinity, y0: Infinity, y1: -Infinity };
  const add = (x, y) => {
    if (!Number.isFinite(y)) return;
    box.x0 = Math.min(box.x0, x);
    box.x1 = Math.max(box.x1, x);
    box.y0 = Math.min(box.y0, y);
    box.y1 = Math.max(box.y1, y);
  };
  for (const s of series) s.ys.forEach((y, i) => add(s.xs[i], y));
  if (band) band.xs.forEach((x, i) => { add(x, band.lower[i]); add(x, band.upper[i]); });
  if (box.x1 === box.x0) box.x1 = box.x0 + 1;
  const pad = Math.max(1e-3, (box.y1 - box.y0) * 0.08);
  box.y0 -= pad;
  box.y1 += pad;
  return box;
}

function drawAxes(ctx, box, X, Y, m, width, height) {
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#8a94a3";
  ctx.strokeStyle = "#edf0f4";
  ctx.lineWidth = 1;
  const step = niceStep(box.y1 - box.y0, 6);
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let v = Math.ceil(box.y0 / step) * step; v <= box.y1; v += step) {
    const y = Math.round(Y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(m.left, y);
    ctx.lineTo(width - m.right, y);
    ctx.stroke();
    ctx.fillText(Math.abs(v) < 1e-9 ? "0" : Number(v.toPrecision(3)).toString(), m.left - 6, y);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const xStep = Math.max(1, niceStep(box.x1 - box.x0, 6));
  for (let x = Math.ceil(box.x0 / xStep) * xStep; x <= box.x1; x += xStep) {
    ctx.fillText(String(x), X(x), height - m.bottom + 6);
  }
  ctx.textAlign = "left";
  ctx.fillText("step", 4, height - m.bottom + 6);
}

// Draw ``series`` ([{label, xs, ys, color, dash}]) and ``band`` ({xs, lower, upper}) on ``canvas``.
function drawLines(canvas, series, band = null) {
  const { ctx, width, height } = fitCanvas(canvas);
  const points = Math.max(0, ...series.map((s) => s.ys.length));
  canvas.dataset.points = String(points);
  if (!points) return;
  const box = extent(series, band);
  const m = { left: 48, right: 12, top: 10, bottom: 24 };
  const X = (x) => m.left + (x - box.x0) / (box.x1 - box.x0) * (width - m.left - m.right);
  const Y = (y) => m.top + (box.y1 - y) / (box.y1 - box.y0) * (height - m.top - m.bottom);
  drawAxes(ctx, box, X, Y, m, width, height);
  if (band && band.xs.length) {
    ctx.beginPath();
    band.xs.forEach((x, i) => (i ? ctx.lineTo(X(x), Y(band.upper[i])) : ctx.moveTo(X(x), Y(band.upper[i]))));
    for (let i = band.xs.length - 1; i >= 0; i--) ctx.lineTo(X(band.xs[i]), Y(band.lower[i]));
    ctx.closePath();
    ctx.fillStyle = "rgba(217, 102, 31, 0.18)";
    ctx.fill();
  }
  for (const s of series) {
    ctx.beginPath();
    s.ys.forEach((y, i) => (i ? ctx.lineTo(X(s.xs[i]), Y(y)) : ctx.moveTo(X(s.xs[i]), Y(y))));
    ctx.setLineDash(s.dash || []);
    ctx.strokeStyle = s.color;
    ctx.lineWidth = 1.6;
    ctx.stroke();
    ctx.setLineDash([]);
    if (s.ys.length === 1) {
      ctx.fillStyle = s.color;
      ctx.beginPath();
      ctx.arc(X(s.xs[0]), Y(s.ys[0]), 3, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
}

// The legend of ``series``. With ``hidden`` (a Set of labels), each entry is a button that hides or shows its
// line, then calls ``redraw``: series of very different scales can be looked at one at a time.
function drawLegend(element, series, hidden = null, redraw = null) {
  element.replaceChildren(...series.map((s) => {
    const item = document.createElement(hidden ? "button" : "span");
    const swatch = document.createElement("i");
    swatch.className = "swatch line";
    swatch.style.background = s.color;
    item.append(swatch, s.label);
    if (hidden) {
      item.type = "button";
      item.className = "legend-item" + (hidden.has(s.label) ? " off" : "");
      item.title = "show or hide this line";
      item.addEventListener("click", () => {
        if (hidden.has(s.label)) hidden.delete(s.label);
        else hidden.add(s.label);
        redraw();
      });
    }
    return item;
  }));
}

// Series from step records ([{n, inputs: {name: [...]}, outputs: {name: [...]}}]): the first few values of
// each tensor, outputs first (solid), then inputs (dashed); at most ``limit`` lines.
function stepSeries(records, { inputs = true, limit = 8 } = {}) {
  if (!records.length) return [];
  const xs = records.map((r) => r.n);
  const series = [];
  const add = (group, dash) => {
    for (const name of Object.keys(records[0][group])) {
      const width = records[0][group][name].length;
      for (let k = 0; k < width && series.length < limit; k++) {
        const label = `${group === "inputs" ? "in " : ""}${name}${width > 1 ? `[${k}]` : ""}`;
        series.push({ label, xs, ys: records.map((r) => r[group][name][k]), dash,
          color: PALETTE[series.length % PALETTE.length] });
      }
    }
  };
  add("outputs", []);
  if (inputs) add("inputs", [4, 3]);
  return series;
}
