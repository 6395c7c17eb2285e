"use strict";
// The mmdpo report page: reads the JSON in #report-data and draws every table and chart with
// the DOM and <canvas>, no library and no network, so the file works anywhere it is opened.
(function () {
  const DATA = JSON.parse(document.getElementById("report-data").textContent);
  const RUNS = DATA.runs || [];
  const MULTI = RUNS.length > 1;
  // Observable's 10-colour palette: distinct hues that stay apart for most colour vision.
  const PALETTE = ["#4269d0", "#ff725c", "#3ca951", "#efb118", "#a463f2",
    "#6cc5b0", "#ff8ab7", "#9c6b4e", "#97bbf5", "#9498a0"];
  // Runs that differ only by seed ("uni_dpo/seed-1") share their variant's colour.
  const groupOf = (name) => name.replace(/[/_-]?seed[-_]?\d+$/, "") || name;
  const GROUPS = [...new Set(RUNS.map((run) => groupOf(run.name)))];
  const BY_GROUP = GROUPS.length > 1 && GROUPS.length < RUNS.length;
  RUNS.forEach((run, index) => {
    run.group = groupOf(run.name);
    run.color = PALETTE[(BY_GROUP ? GROUPS.indexOf(run.group) : index) % PALETTE.length];
  });
  const state = { smoothing: 0 };
  const charts = [];
  const sections = [];

  // ---------------------------------------------------------------- DOM and number helpers
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);

  function fmt(value, digits) {
    if (value === null || value === undefined) return "–";
    if (typeof value !== "number") return String(value);
    if (!Number.isFinite(value)) return "–";
    if (Number.isInteger(value) && Math.abs(value) < 1e9) return String(value);
    const size = Math.abs(value);
    if (size !== 0 && (size < 1e-3 || size >= 1e6)) return value.toExponential(2);
    return String(Number(value.toPrecision(digits || 4)));
  }

  function fmtSeconds(seconds) {
    if (!isNum(seconds)) return "–";
    if (seconds < 90) return `${seconds.toFixed(0)} s`;
    if (seconds < 5400) return `${(seconds / 60).toFixed(1)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  function fmtBytes(bytes) {
    if (!isNum(bytes)) return "–";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let value = bytes, unit = 0;
    while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
    return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
  }

  // A table cell: numbers right-aligned, their full value in data-value (tests read it).
  function cell(value, extra) {
    if (value instanceof Node) return h("td", extra || {}, value);
    if (typeof value === "number" || value === null || value === undefined) {
      const attrs = { class: "num", ...(extra || {}) };
      if (isNum(value)) attrs["data-value"] = String(value);
      return h("td", attrs, fmt(value));
    }
    return h("td", extra || {}, String(value));
  }

  function table(columns, rows, options) {
    const opts = options || {};
    const head = h("tr", {}, columns.map((column) => {
      const spec = typeof column === "string" ? { label: column } : column;
      return h("th", { class: spec.num ? "num" : null, title: spec.title || null }, spec.label);
    }));
    const body = rows.map((row) => (row instanceof Node ? row : h("tr", {}, row.map((v) => cell(v)))));
    return h("div", { class: "table-wrap" },
      h("table", { "data-table": opts.id || null }, opts.caption ? h("caption", {}, opts.caption) : null,
        h("thead", {}, head), h("tbody", {}, body)));
  }

  function swatch(color) { return h("span", { class: "swatch", style: `background:${color}` }); }

  function runLabel(run) {
    return h("span", {}, MULTI ? swatch(run.color) : null, run.name);
  }

  function get(object, path) {
    return path.split(".").reduce((node, key) => (node && typeof node === "object" ? node[key] : undefined), object);
  }

  function section(id, title, lead) {
    const node = h("section", { id }, h("h2", {}, title), lead ? h("p", { class: "lead" }, lead) : null);
    sections.push({ id, title });
    document.getElementById("app").append(node);
    return node;
  }

  // ---------------------------------------------------------------- charts on <canvas>
  const tooltip = document.getElementById("tooltip");
  const PAD = { left: 54, right: 14, top: 10, bottom: 28 };

  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const ratio = raw / magnitude;
    return (ratio >= 7.5 ? 10 : ratio >= 3.5 ? 5 : ratio >= 1.5 ? 2 : 1) * magnitude;
  }

  function ticks(lo, hi, count) {
    const step = niceStep(hi - lo, count);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return { values: out, step };
  }

  // One format per axis: all fixed-point, or all exponent when the largest tick is tiny or huge.
  function tickFormatter(values, step) {
    const largest = Math.max(...values.map(Math.abs));
    const digits = Math.floor(Math.log10(step) + 1e-9);
    if (largest >= 1e5 || (largest > 0 && largest < 1e-2)) {
      const precision = Math.max(0, Math.min(6, Math.floor(Math.log10(largest)) - digits));
      return (v) => (v === 0 ? "0" : v.toExponential(precision));
    }
    return (v) => (v === 0 ? "0" : v.toFixed(Math.max(0, Math.min(8, -digits))));
  }

  function padRange(lo, hi, fixed) {
    if (fixed) { lo = Math.min(lo, fixed[0]); hi = Math.max(hi, fixed[1]); }
    if (!(hi > lo)) { const d = Math.abs(lo) * 0.1 || 0.5; return [lo - d, hi + d]; }
    const pad = fixed ? 0 : (hi - lo) * 0.06;
    return [lo - pad, hi + pad];
  }

  function ema(values, weight) {
    if (!weight) return values;
    let last = 0, count = 0;
    return values.map((v) => {
      if (!isNum(v)) return null;
      count += 1;
      last = last * weight + (1 - weight) * v;
      return last / (1 - Math.pow(weight, count)); // debiased, as TensorBoard does
    });
  }

  function nearestIndex(xs, target) {
    let lo = 0, hi = xs.length - 1;
    if (hi < 0) return -1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (xs[mid] < target) lo = mid; else hi = mid;
    }
    return Math.abs(xs[lo] - target) <= Math.abs(xs[hi] - target) ? lo : hi;
  }

  class Chart {
    constructor(container, spec, kind) {
      this.spec = spec;
      this.kind = kind;
      this.canvas = h("canvas", { role: "img", "aria-label": spec.title, "data-chart": kind });
      this.legend = h("div", { class: "legend" });
      const wrap = h("div", { class: "chart" }, h("div", { class: "title" }, spec.title),
        spec.note ? h("div", { class: "note" }, spec.note) : null, this.canvas, this.legend);
      container.append(wrap);
      this.hover = null;
      this.canvas.addEventListener("mousemove", (event) => {
        const box = this.canvas.getBoundingClientRect();
        this.hover = { x: event.clientX - box.left, y: event.clientY - box.top, cx: event.clientX, cy: event.clientY };
        this.draw();
      });
      this.canvas.addEventListener("mouseleave", () => { this.hover = null; tooltip.hidden = true; this.draw(); });
      charts.push(this);
    }

    setLegend(items) {
      const shown = new Map();  // one entry per colour and label (seeds of a variant share both)
      for (const item of items) {
        const label = item.legend || item.label;
        shown.set(`${item.color}|${label}`, h("span", {}, swatch(item.color), label));
      }
      this.legend.replaceChildren(...shown.values());
    }

    context() {
      const box = this.canvas.getBoundingClientRect();
      const ratio = window.devicePixelRatio || 1;
      const width = Math.max(1, box.width), height = Math.max(1, box.height);
      this.canvas.width = Math.round(width * ratio);
      this.canvas.height = Math.round(height * ratio);
      const ctx = this.canvas.getContext("2d");
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, width, height);
      ctx.font = "11px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
      return { ctx, width, height };
    }

    axes(ctx, width, height, xr, yr, xTicks) {
      const plotW = width - PAD.left - PAD.right, plotH = height - PAD.top - PAD.bottom;
      const sx = (x) => PAD.left + ((x - xr[0]) / (xr[1] - xr[0] || 1)) * plotW;
      const sy = (y) => PAD.top + (1 - (y - yr[0]) / (yr[1] - yr[0] || 1)) * plotH;
      ctx.strokeStyle = "#e3e7ed";
      ctx.fillStyle = "#5f6b7a";
      ctx.lineWidth = 1;
      const yt = ticks(yr[0], yr[1], 4);
      const yLabel = tickFormatter(yt.values, yt.step);
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      for (const v of yt.values) {
        ctx.beginPath(); ctx.moveTo(PAD.left, Math.round(sy(v)) + 0.5); ctx.lineTo(width - PAD.right, Math.round(sy(v)) + 0.5); ctx.stroke();
        ctx.fillText(yLabel(v), PAD.left - 6, sy(v));
      }
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      if (xTicks) {
        for (const item of xTicks) ctx.fillText(item.label, sx(item.x), height - PAD.bottom + 6);
      } else {
        const xt = ticks(xr[0], xr[1], Math.max(2, Math.floor(plotW / 80)));
        const xLabel = tickFormatter(xt.values, Math.max(xt.step, 1));
        for (const v of xt.values) ctx.fillText(xLabel(v), sx(v), height - PAD.bottom + 6);
      }
      ctx.strokeStyle = "#b8c0cc";
      ctx.beginPath(); ctx.moveTo(PAD.left, height - PAD.bottom + 0.5); ctx.lineTo(width - PAD.right, height - PAD.bottom + 0.5); ctx.stroke();
      return { sx, sy, plotW, plotH };
    }

    empty(ctx, width, height, text) {
      ctx.fillStyle = "#5f6b7a";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(text, width / 2, height / 2);
      ctx.strokeStyle = "#e3e7ed";
      ctx.strokeRect(0.5, 0.5, width - 1, height - 1);
    }

    showTooltip(title, rows) {
      tooltip.replaceChildren(h("div", { style: "font-weight:600;margin-bottom:3px" }, title),
        ...rows.map((row) => h("div", { class: "row" }, row.color ? swatch(row.color) : null,
          h("span", {}, row.label), h("span", { class: "v" }, row.value))));
      tooltip.hidden = false;
      const box = tooltip.getBoundingClientRect();
      let left = this.hover.cx + 14, top = this.hover.cy + 14;
      if (left + box.width > window.innerWidth - 8) left = this.hover.cx - box.width - 14;
      if (top + box.height > window.innerHeight - 8) top = this.hover.cy - box.height - 14;
      tooltip.style.left = `${left}px`;
      tooltip.style.top = `${top}px`;
    }
  }

  // Series: {label, color, x, y, dash, points, smooth, band: {lo, hi}}
  class LineChart extends Chart {
    constructor(container, spec) {
      super(container, spec, "line");
      this.setLegend(spec.series);
    }

    shown(series) {
      const smoothed = series.smooth && state.smoothing > 0;
      return { ...series, drawn: smoothed ? ema(series.y, state.smoothing) : series.y, smoothed };
    }

    draw() {
      const { ctx, width, height } = this.context();
      const series = this.spec.series.map((s) => this.shown(s));
      const xs = [], ys = [];
      for (const s of series) {
        s.x.forEach((x, i) => {
          const values = [s.y[i], s.band ? s.band.lo[i] : null, s.band ? s.band.hi[i] : null];
          const finite = values.filter(isNum);
          if (finite.length) { xs.push(x); ys.push(...finite); }
        });
      }
      if (!xs.length) { this.empty(ctx, width, height, "nothing logged"); return; }
      let xr = [Math.min(...xs), Math.max(...xs)];
      if (xr[0] === xr[1]) xr = [xr[0] - 1, xr[1] + 1];
      const yr = padRange(Math.min(...ys), Math.max(...ys), this.spec.yRange);
      const { sx, sy } = this.axes(ctx, width, height, xr, yr);
      for (const s of series) this.drawSeries(ctx, s, sx, sy);
      if (this.hover) this.drawHover(ctx, series, sx, sy, xr, width, height);
    }

    drawSeries(ctx, s, sx, sy) {
      if (s.band) {
        ctx.fillStyle = s.color;
        ctx.globalAlpha = 0.14;
        this.bandPath(ctx, s, sx, sy);
        ctx.globalAlpha = 1;
      }
      const strokes = s.smoothed ? [[s.y, 0.25, 1], [s.drawn, 1, 1.8]] : [[s.y, 1, 1.6]];
      for (const [values, alpha, lineWidth] of strokes) {
        ctx.strokeStyle = s.color;
        ctx.globalAlpha = alpha;
        ctx.lineWidth = lineWidth;
        ctx.setLineDash(s.dash ? [5, 4] : []);
        ctx.beginPath();
        let open = false;
        values.forEach((v, i) => {
          if (!isNum(v)) { open = false; return; }
          if (open) ctx.lineTo(sx(s.x[i]), sy(v)); else ctx.moveTo(sx(s.x[i]), sy(v));
          open = true;
        });
        ctx.stroke();
      }
      ctx.setLineDash([]);
      ctx.globalAlpha = 1;
      if (s.points || s.x.length <= 30) {
        ctx.fillStyle = s.color;
        s.drawn.forEach((v, i) => {
          if (isNum(v)) { ctx.beginPath(); ctx.arc(sx(s.x[i]), sy(v), 2.6, 0, 2 * Math.PI); ctx.fill(); }
        });
      }
    }

    bandPath(ctx, s, sx, sy) {
      // One closed shape per run of steps where both bounds are known.
      let segment = [];
      const flush = () => {
        if (segment.length) {
          ctx.beginPath();
          segment.forEach((i, k) => (k ? ctx.lineTo(sx(s.x[i]), sy(s.band.hi[i])) : ctx.moveTo(sx(s.x[i]), sy(s.band.hi[i]))));
          for (let k = segment.length - 1; k >= 0; k -= 1) ctx.lineTo(sx(s.x[segment[k]]), sy(s.band.lo[segment[k]]));
          ctx.closePath();
          ctx.fill();
        }
        segment = [];
      };
      s.x.forEach((_, i) => (isNum(s.band.lo[i]) && isNum(s.band.hi[i]) ? segment.push(i) : flush()));
      flush();
    }

    drawHover(ctx, series, sx, sy, xr, width, height) {
      const target = xr[0] + ((this.hover.x - PAD.left) / (width - PAD.left - PAD.right)) * (xr[1] - xr[0]);
      let step = null, best = Infinity;
      for (const s of series) {
        const i = nearestIndex(s.x, target);
        if (i >= 0 && Math.abs(s.x[i] - target) < best) { best = Math.abs(s.x[i] - target); step = s.x[i]; }
      }
      if (step === null) return;
      ctx.strokeStyle = "#8a94a3";
      ctx.lineWidth = 1;
      ctx.beginPath(); ctx.moveTo(Math.round(sx(step)) + 0.5, PAD.top); ctx.lineTo(Math.round(sx(step)) + 0.5, height - PAD.bottom); ctx.stroke();
      const rows = [];
      for (const s of series) {
        const i = nearestIndex(s.x, step);
        if (i < 0 || s.x[i] !== step) continue;
        const v = s.drawn[i];
        if (isNum(v)) {
          ctx.fillStyle = s.color;
          ctx.beginPath(); ctx.arc(sx(step), sy(v), 4, 0, 2 * Math.PI); ctx.fill();
        }
        let text = fmt(s.y[i]);
        if (s.smoothed) text += ` (smoothed ${fmt(v)})`;
        if (s.band) text += `  [${fmt(s.band.lo[i])} – ${fmt(s.band.hi[i])}]`;
        rows.push({ label: s.label, color: s.color, value: text });
      }
      this.showTooltip(`step ${step}`, rows);
    }
  }

  // Grouped bars: {categories, series: [{label, color, values}]}; or a histogram:
  // {edges, series: [{label, color, counts}]} drawn as overlaid translucent bars.
  class BarChart extends Chart {
    constructor(container, spec) {
      super(container, spec, spec.edges ? "histogram" : "bar");
      this.setLegend(spec.series);
    }

    draw() {
      const { ctx, width, height } = this.context();
      const spec = this.spec;
      const histogram = Boolean(spec.edges);
      const n = histogram ? spec.edges.length - 1 : spec.categories.length;
      const all = spec.series.flatMap((s) => (histogram ? s.counts : s.values)).filter(isNum);
      if (!n || !all.length) { this.empty(ctx, width, height, "no values"); return; }
      const yr = padRange(Math.min(0, ...all), Math.max(0, ...all), spec.yRange);
      yr[0] = Math.min(0, ...all);
      const xTicks = histogram ? this.edgeTicks(n) : spec.categories.map((label, i) => ({ x: i + 0.5, label: this.shorten(label, n, width) }));
      const { sx, sy } = this.axes(ctx, width, height, [0, n], yr, xTicks);
      const groups = histogram ? 1 : spec.series.length;
      const slot = (sx(1) - sx(0)) * (histogram ? 0.98 : 0.8);
      const hoverIndex = this.hover ? Math.floor(((this.hover.x - PAD.left) / (width - PAD.left - PAD.right)) * n) : -1;
      spec.series.forEach((s, g) => {
        const values = histogram ? s.counts : s.values;
        ctx.fillStyle = s.color;
        ctx.globalAlpha = histogram && spec.series.length > 1 ? 0.55 : 0.9;
        values.forEach((v, i) => {
          if (!isNum(v)) return;
          const left = sx(i) + (sx(1) - sx(0) - slot) / 2 + (histogram ? 0 : (slot / groups) * g);
          const top = sy(Math.max(v, 0)), bottom = sy(Math.min(v, 0));
          ctx.fillRect(left, top, Math.max(1, slot / groups - (histogram ? 0 : 2)), Math.max(1, bottom - top));
        });
      });
      ctx.globalAlpha = 1;
      if (hoverIndex >= 0 && hoverIndex < n) {
        ctx.fillStyle = "rgba(29,36,48,0.06)";
        ctx.fillRect(sx(hoverIndex), PAD.top, sx(1) - sx(0), height - PAD.top - PAD.bottom);
        const title = histogram
          ? `${fmt(spec.edges[hoverIndex])} to ${fmt(spec.edges[hoverIndex + 1])}`
          : spec.categories[hoverIndex];
        this.showTooltip(title, spec.series.map((s) => ({
          label: s.label, color: s.color, value: fmt((histogram ? s.counts : s.values)[hoverIndex]),
        })));
      }
    }

    edgeTicks(n) {
      const edges = this.spec.edges;
      const every = Math.max(1, Math.ceil(n / 6));
      const out = [];
      for (let i = 0; i <= n; i += every) out.push({ x: i, label: fmt(edges[i], 3) });
      return out;
    }

    shorten(label, n, width) {
      const room = Math.max(4, Math.floor((width - PAD.left - PAD.right) / n / 6.5));
      return label.length > room ? `${label.slice(0, room - 1)}…` : label;
    }
  }

  // ---------------------------------------------------------------- header
  function lastStep(run) {
    const curve = run.metrics.curves.loss || Object.values(run.metrics.curves)[0];
    return curve && curve.x.length ? curve.x[curve.x.length - 1] : null;
  }

  function basename(path) {
    if (typeof path !== "string" || !path) return "–";
    const parts = path.replace(/\/+$/, "").split("/");
    return parts[parts.length - 1];
  }

  function kpi(label, value, hint, id) {
    return h("div", { class: "kpi", "data-kpi": id || null }, h("div", { class: "label" }, label),
      h("div", { class: "value" }, value), hint ? h("div", { class: "hint" }, hint) : null);
  }

  function lossLabel(config) {
    if (!config || !config.loss) return "–";
    return config.loss.name || "–";
  }

  function renderHeader() {
    const app = document.getElementById("app");
    const roots = (DATA.roots || []).map((root) => h("code", {}, root));
    const header = h("header", { class: "hero" }, h("h1", {}, DATA.title || "mmdpo report"),
      h("div", { class: "sub" }, `${RUNS.length} run${RUNS.length === 1 ? "" : "s"} · generated ${DATA.generated} · mmdpo ${DATA.version} · `,
        roots.length ? roots.reduce((acc, node, i) => (i ? [...acc, ", ", node] : [node]), []) : null));
    app.append(header);
    const cards = h("div", { class: "kpis" });
    if (!MULTI && RUNS.length) {
      const run = RUNS[0], config = run.config || {}, summary = run.data_summary;
      const model = config.model || {};
      const lora = config.lora || {};
      const skipped = run.metrics.skipped.length;
      const train = summary && summary.splits && summary.splits.train;
      const held = summary && summary.splits && summary.splits.eval;
      cards.append(
        kpi("Loss", lossLabel(config), config.loss && config.loss.kwargs ? Object.entries(config.loss.kwargs).map(([k, v]) => `${k}=${fmt(v)}`).join(", ") : null, "loss"),
        kpi("Model", basename(model.name_or_path), [model.quantization && model.quantization !== "none" ? model.quantization : null, lora.enabled ? `LoRA r=${lora.r}` : (config.lora ? "full fine-tuning" : null)].filter(Boolean).join(" · "), "model"),
        kpi("Steps", fmt(lastStep(run)), skipped ? `${skipped} skipped (non-finite)` : "none skipped", "steps"),
        kpi("Pairs", train ? fmt(train.pairs) : "–", held ? `${fmt(held.pairs)} held out` : null, "pairs"),
        kpi("Train reward accuracy", fmt(run.last["rewards/accuracies"], 3), "last logged step", "train-accuracy"),
        kpi("Held-out reward accuracy", fmt(run.last_eval["eval/rewards/accuracies"], 3), "last eval", "eval-accuracy"),
        kpi("Held-out margin", fmt(run.last_eval["eval/rewards/margins"], 3), "chosen − rejected reward", "eval-margin"),
        kpi("Wall time", fmtSeconds(run.wall_seconds), "from the run's file times", "wall"),
      );
    } else if (MULTI) {
      const losses = [...new Set(RUNS.map((run) => lossLabel(run.config)))];
      const steps = RUNS.map(lastStep).filter(isNum);
      cards.append(
        kpi("Runs", String(RUNS.length), `${(DATA.config_differences || []).length} settings differ`, "runs"),
        kpi("Losses", losses.join(", "), null, "losses"),
        kpi("Steps", steps.length ? fmt(Math.max(...steps)) : "–", "longest run", "steps"),
      );
      const accuracy = RUNS.map((run) => [run.name, run.last_eval["eval/rewards/accuracies"]]).filter(([, v]) => isNum(v));
      if (accuracy.length) {
        accuracy.sort((a, b) => b[1] - a[1]);
        cards.append(kpi("Best held-out reward accuracy", fmt(accuracy[0][1], 3), accuracy[0][0], "best"));
      }
      // The first metric of each benchmark (two at most), one line per eval label.
      const bench = benchmarkColumns();
      const firsts = bench.columns.filter((key, i) => bench.columns.findIndex((k) => k.split("/")[0] === key.split("/")[0]) === i);
      for (const key of firsts.slice(0, 2)) {
        const values = [...bench.values.entries()].filter(([k, v]) => k.endsWith(`|${key}`) && isNum(v)).map(([k, v]) => [k.split("|")[0], v]);
        if (!values.length) continue;
        cards.append(h("div", { class: "kpi", "data-kpi": `bench-${key}` }, h("div", { class: "label" }, key),
          values.map(([label, v]) => h("div", { class: "kpi-row" }, h("span", {}, label), h("span", { class: "v" }, fmt(v, 3))))));
      }
    }
    app.append(cards);
    const missing = RUNS.flatMap((run) => run.missing.map((item) => ({ run, ...item })));
    if (missing.length) {
      app.append(h("div", { class: "notice", "data-missing": String(missing.length) },
        h("strong", {}, "Not in the run folder"), h("ul", {}, missing.map((item) => h("li", {},
          MULTI ? `${item.run.name}: ` : "", h("code", {}, item.file), ` — ${item.why}`)))));
    }
  }

  // ---------------------------------------------------------------- tables of numbers
  const COMPARE = [
    ["loss", "train loss"], ["rewards/margins", "train margin"], ["rewards/accuracies", "train acc."],
    ["weights/ess_ratio", "ESS / pairs"],
  ];
  const COMPARE_EVAL = [
    ["eval/loss", "held-out loss"], ["eval/rewards/accuracies", "held-out acc."],
    ["eval/rewards/margins", "held-out margin"], ["eval/spearman_score_reward", "Spearman"],
  ];

  function configValue(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value === "object") return JSON.stringify(value);
    return typeof value === "number" ? value : String(value);
  }

  function benchmarkColumns() {
    // Benchmark metrics of labels named like the runs (a demo's eval/<run>/, eval/after/).
    const columns = [];
    const values = new Map();
    for (const block of DATA.collection_evals || []) {
      for (const [bench, entry] of Object.entries(block.benchmarks)) {
        for (const [label, result] of Object.entries(entry.results)) {
          for (const [metric, value] of Object.entries(result.metrics || {})) {
            const key = `${bench}/${metric}`;
            if (!columns.includes(key)) columns.push(key);
            values.set(`${label}|${key}`, value);
          }
        }
      }
    }
    return { columns, values };
  }

  function settingsCell(run, diffs) {
    if (!diffs.length) return cell("same settings");
    // The loss first; keys a run does not set (another loss's hyperparameters) left out.
    const ordered = [...diffs].sort((a, b) => (b === "loss.name") - (a === "loss.name"));
    const lines = ordered.filter((key) => get(run.config, key) !== null && get(run.config, key) !== undefined)
      .map((key) => h("div", {}, h("code", {}, key.replace(/^loss\.kwargs\./, "")), " ", configValue(get(run.config, key))));
    return h("td", { class: "settings" }, lines);
  }

  function renderComparison() {
    if (!MULTI) return;
    const node = section("compare", "Comparison", "One row per run: the settings that differ, the last logged numbers, and the benchmark results saved beside the runs.");
    const diffs = DATA.config_differences || [];
    const bench = benchmarkColumns();
    const tail = (name) => name.split("/").pop();
    const columns = ["run", "settings that differ", { label: "steps", num: true },
      ...COMPARE.map(([, label]) => ({ label, num: true })), ...COMPARE_EVAL.map(([, label]) => ({ label, num: true })),
      ...bench.columns.map((key) => ({ label: key, num: true })), { label: "wall time", num: true }];
    const present = (key, source) => RUNS.some((run) => isNum(run[source][key]));
    const trainKeys = COMPARE.filter(([key]) => present(key, "last"));
    const evalKeys = COMPARE_EVAL.filter(([key]) => present(key, "last_eval"));
    columns.splice(3, COMPARE.length + COMPARE_EVAL.length, ...[...trainKeys, ...evalKeys].map(([, label]) => ({ label, num: true })));
    const rows = RUNS.map((run) => h("tr", { "data-run": run.name }, cell(runLabel(run)), settingsCell(run, diffs), cell(lastStep(run)),
      trainKeys.map(([key]) => cell(run.last[key], { "data-key": key })),
      evalKeys.map(([key]) => cell(run.last_eval[key], { "data-key": key })),
      bench.columns.map((key) => cell(bench.values.get(`${tail(run.name)}|${key}`), { "data-key": key })),
      cell(fmtSeconds(run.wall_seconds))));
    const labels = new Set();
    for (const block of DATA.collection_evals || []) block.labels.forEach((label) => labels.add(label));
    const runTails = new Set(RUNS.map((run) => tail(run.name)));
    for (const label of labels) {
      if (runTails.has(label)) continue;
      rows.push(h("tr", { "data-label": label }, cell(h("span", { class: "muted" }, label)), cell(h("span", { class: "muted" }, "benchmarks only")), cell(null),
        [...trainKeys, ...evalKeys].map(() => cell(null)),
        bench.columns.map((key) => cell(bench.values.get(`${label}|${key}`), { "data-key": key })), cell("")));
    }
    node.append(table(columns, rows, { id: "comparison" }));
  }

  function renderExtraTables() {
    const tables = DATA.extra_tables || [];
    if (!tables.length) return;
    const node = section("tables", "Summary tables", null);
    tables.forEach((spec, index) => {
      // A column of numbers (None allowed) is right-aligned under its heading too.
      const numeric = spec.columns.map((_, c) => spec.rows.every((row) => row[c] === null || typeof row[c] === "number"));
      const columns = spec.columns.map((c, i) => (typeof c === "string" ? { label: c, num: numeric[i] } : c));
      node.append(h("h3", {}, spec.title), spec.note ? h("p", { class: "lead" }, spec.note) : null,
        table(columns, spec.rows.map((row) => h("tr", {}, row.map((v) => cell(v)))), { id: `extra-${index}` }));
    });
  }

  // ---------------------------------------------------------------- evals
  function evalBlocks() {
    const blocks = (DATA.collection_evals || []).map((block) => ({ title: basename(block.path), ...block }));
    RUNS.forEach((run) => { if (run.evals) blocks.push({ title: run.name, path: run.path, ...run.evals }); });
    if (blocks.length === 1) blocks[0].title = "";
    return blocks;
  }

  function renderEvals() {
    const blocks = evalBlocks();
    const heldOut = RUNS.filter((run) => Object.keys(run.last_eval).some((key) => key.startsWith("eval/")));
    const node = section("evals", "Evaluation", "Benchmarks saved under eval/<label>/ (as mmdpo eval --out writes them), before and after, and the engine's own held-out preference pairs.");
    if (!blocks.length && !heldOut.length) {
      node.append(h("p", { class: "empty" }, "No benchmark results (eval/<label>/<benchmark>.json) and no held-out pairs in these runs."));
      return;
    }
    blocks.forEach((block, b) => {
      for (const [bench, entry] of Object.entries(block.benchmarks)) renderBenchmark(node, block, bench, entry, b);
    });
    if (heldOut.length) renderHeldOut(node, heldOut);
  }

  function signed(value) {
    return `${value > 0 ? "+" : value < 0 ? "−" : "±"}${fmt(Math.abs(value))}`;
  }

  function renderBenchmark(node, block, bench, entry, blockIndex) {
    const labels = block.labels.filter((label) => entry.results[label]);
    const first = entry.results[labels[0]];
    const metricsOf = (label) => entry.results[label].metrics || {};
    const metrics = [];
    labels.forEach((label) => Object.keys(metricsOf(label)).forEach((m) => { if (!metrics.includes(m)) metrics.push(m); }));
    const pills = [h("span", { class: "pill" }, `v${first.version}`), h("span", { class: "pill" }, `n = ${first.n}`)];
    if (labels.some((label) => entry.results[label].generated)) pills.push(h("span", { class: "pill gen", title: "a seeded stand-in sample, not the benchmark" }, "generated data"));
    node.append(h("h3", {}, block.title ? `${block.title} · ` : "", bench, " ", pills));
    const columns = ["metric", ...labels.map((label, i) => ({ label: i ? `${label} (Δ vs ${labels[0]})` : label, num: true, title: entry.results[label].adapter || entry.results[label].model || "" }))];
    const rows = metrics.map((metric) => {
      const base = metricsOf(labels[0])[metric];
      return h("tr", { "data-metric": metric }, cell(metric), labels.map((label, i) => {
        const value = metricsOf(label)[metric];
        const td = cell(value, { "data-label": label });
        if (i && isNum(value) && isNum(base)) td.append(h("span", { class: "delta" }, signed(value - base)));
        return td;
      }));
    });
    const tableNode = table(columns, rows, { id: `eval-${blockIndex}-${bench}` });
    const unit = metrics.filter((m) => labels.every((label) => { const v = metricsOf(label)[m]; return v === null || v === undefined || (isNum(v) && v >= 0 && v <= 1); }));
    if (!unit.length) {
      node.append(tableNode);
    } else {
      const split = h("div", { class: "split" }, tableNode);
      node.append(split);
      new BarChart(split, { title: `${bench}: ${labels.join(" vs ")}`, categories: unit, yRange: [0, 1],
        series: labels.map((label, i) => ({ label, color: PALETTE[i % PALETTE.length], values: unit.map((m) => metricsOf(label)[m]) })) });
    }
    if (entry.examples && entry.examples.length) node.append(renderEvalExamples(entry.examples, labels));
  }

  function renderEvalExamples(examples, labels) {
    const details = h("details", {}, h("summary", {}, `${examples.length} answers under every label (changed scores first)`));
    for (const example of examples) {
      const answers = labels.filter((label) => example.answers[label]).map((label) => {
        const answer = example.answers[label];
        return h("div", { class: "answer" }, h("div", { class: "who" }, h("span", {}, label), h("span", { class: "score" }, `score ${fmt(answer.score)}`)),
          h("div", { class: "text" }, answer.response === null || answer.response === undefined ? "–" : String(answer.response)));
      });
      const body = h("div", {}, h("div", { class: "prompt" }, example.prompt === null ? "" : String(example.prompt)),
        example.label !== null && example.label !== undefined ? h("div", { class: "muted" }, `expected: ${typeof example.label === "object" ? JSON.stringify(example.label) : example.label}`) : null,
        h("div", { class: "answers" }, answers));
      details.append(h("div", { class: "card" }, h("div", { class: example.image ? "sample compact" : "sample noimage" },
        example.image ? h("img", { src: example.image, alt: `image of ${example.id}` }) : null, body)));
    }
    return details;
  }

  const HELD_OUT_MAIN = ["eval/rewards/accuracies", "eval/rewards/margins", "eval/loss", "eval/spearman_score_reward",
    "eval/rewards/chosen", "eval/rewards/rejected", "eval/weights/ess_ratio"];

  function renderHeldOut(node, runs) {
    node.append(h("h3", {}, "Held-out preference pairs"), h("p", { class: "lead" }, `The engine's own evaluation on held-out pairs (eval/ keys of metrics.jsonl), ${MULTI ? "at the last evaluation" : "at its first and last evaluation"}.`));
    const keys = [];
    runs.forEach((run) => Object.keys(run.last_eval).forEach((key) => { if (key.startsWith("eval/") && !keys.includes(key)) keys.push(key); }));
    const main = HELD_OUT_MAIN.filter((key) => keys.includes(key));
    const rest = keys.filter((key) => !main.includes(key)).sort();
    if (MULTI) {
      // One row per run (the last evaluation): an ablation may hold dozens of runs.
      const columnsOf = (list) => ["run", ...list.map((key) => ({ label: key.slice(5), num: true }))];
      const rowsOf = (list) => runs.map((run) => h("tr", { "data-run": run.name }, cell(runLabel(run)), list.map((key) => cell(run.last_eval[key], { "data-key": key }))));
      node.append(table(columnsOf(main), rowsOf(main), { id: "held-out" }));
      if (rest.length) node.append(h("details", {}, h("summary", {}, `${rest.length} more held-out metrics`), table(columnsOf(rest), rowsOf(rest), { id: "held-out-more" })));
      return;
    }
    const columns = ["metric", { label: "first eval", num: true }, { label: "last eval", num: true }];
    const rows = (list) => list.map((key) => h("tr", { "data-key": key }, cell(key.slice(5)), runs.flatMap((run) => {
      const curve = run.metrics.curves[key];
      const first = curve && curve.x.length > 1 ? curve.y[0] : null;
      return [cell(first, { "data-which": "first", "data-run": run.name }), cell(run.last_eval[key], { "data-which": "last", "data-run": run.name })];
    })));
    node.append(table(columns, rows(main), { id: "held-out" }));
    if (rest.length) node.append(h("details", {}, h("summary", {}, `${rest.length} more held-out metrics`), table(columns, rows(rest), { id: "held-out-more" })));
  }

  // ---------------------------------------------------------------- curves
  // Each panel names training keys; the held-out key "eval/<key>" joins its panel, dashed.
  const PANELS = [
    { title: "Loss", keys: ["loss"], smooth: true },
    { title: "Implicit rewards", keys: ["rewards/chosen", "rewards/rejected"], smooth: true },
    { title: "Reward margin (chosen − rejected)", keys: ["rewards/margins", /^rewards\/margins\/[^/]+$/], smooth: true },
    { title: "Reward accuracy", keys: ["rewards/accuracies"], yRange: [0, 1], smooth: true },
    { title: "Policy log-probs", keys: ["logps/chosen", "logps/rejected"], smooth: true },
    { title: "Quality weight w_qual", band: "weights/w_qual", note: "line: mean over the step's pairs; band: min to max" },
    { title: "Performance weight w_perf", band: "weights/w_perf", note: "line: mean over the step's pairs; band: min to max" },
    { title: "Effective sample size / pairs", keys: ["weights/ess_ratio"], note: "(Σw)² / Σw² of w_qual·w_perf over the pairs; 1 = equal weights", yRange: [0, 1] },
    { title: "Share of pairs with the c-NLL term on", keys: ["weights/nll_active"], yRange: [0, 1] },
    { title: "Learning rate", keys: ["lr"] },
    { title: "Gradient norm", keys: ["grad_norm"], note: "before clipping", smooth: true },
    { title: "Score–reward agreement (held-out)", keys: ["eval/spearman_score_reward"], note: "Spearman correlation of score margin and reward margin" },
    { title: "Pairs per second", keys: ["perf/pairs_per_s"], smooth: true },
    { title: "Tokens per second", keys: ["perf/tokens_per_s"], smooth: true },
    { title: "Peak memory", keys: ["memory/peak_bytes"], note: "GB", scale: 1e-9 },
  ];
  const IGNORED = [/^epoch$/, /^(eval\/)?pairs(\/.*)?$/, /^(eval\/)?weights\/ess$/];

  function allKeys() {
    const keys = [];
    RUNS.forEach((run) => Object.keys(run.metrics.curves).forEach((key) => { if (!keys.includes(key)) keys.push(key); }));
    return keys;
  }

  function panelKeys(panel, keys) {
    const out = [];
    for (const pattern of panel.keys || []) {
      for (const key of keys) {
        const hit = typeof pattern === "string" ? key === pattern : pattern.test(key);
        if (hit && !out.includes(key)) out.push(key);
      }
    }
    return out;
  }

  function curveSeries(run, key, color, label, panel) {
    const curve = run.metrics.curves[key];
    const scale = panel.scale || 1;
    const y = curve.y.map((v) => (isNum(v) ? v * scale : null));
    const isEval = key.startsWith("eval/");
    const legend = BY_GROUP && label.startsWith(run.name) ? label.replace(run.name, run.group) : null;
    return { label, legend, color, x: curve.x, y, dash: isEval, points: isEval, smooth: panel.smooth && !isEval };
  }

  // The training curve of ``key`` and its held-out twin, when each was logged.
  function keySeries(run, key, color, label, panel) {
    const out = [];
    if (run.metrics.curves[key]) out.push(curveSeries(run, key, color, label, panel));
    const twin = `eval/${key}`;
    if (!key.startsWith("eval/") && run.metrics.curves[twin]) out.push(curveSeries(run, twin, color, `${label} (held-out)`, panel));
    return out;
  }

  function bandSeries(run, prefix, color, label) {
    const c = run.metrics.curves;
    const mean = c[`${prefix}_mean`], lo = c[`${prefix}_min`], hi = c[`${prefix}_max`];
    const align = (curve) => mean.x.map((x) => { const i = curve ? curve.x.indexOf(x) : -1; return i >= 0 ? curve.y[i] : null; });
    const legend = BY_GROUP ? run.group : null;
    const out = [{ label, legend, color, x: mean.x, y: mean.y, band: { lo: align(lo), hi: align(hi) } }];
    const held = c[`eval/${prefix}_mean`];
    if (held) out.push({ label: `${label} (held-out)`, legend: legend && `${legend} (held-out)`, color, x: held.x, y: held.y, dash: true, points: true });
    return out;
  }

  function drawPanel(grid, panel, keys, used) {
    if (panel.band) {
      for (const suffix of ["_mean", "_min", "_max"]) { used.add(panel.band + suffix); used.add(`eval/${panel.band}${suffix}`); }
      const runs = RUNS.filter((run) => run.metrics.curves[`${panel.band}_mean`]);
      if (runs.length) new LineChart(grid, { title: panel.title, note: panel.note, series: runs.flatMap((run) => bandSeries(run, panel.band, run.color, MULTI ? run.name : "mean")) });
      return;
    }
    const found = panelKeys(panel, keys);
    found.forEach((key) => { used.add(key); used.add(`eval/${key}`); });
    if (!found.length) return;
    if (!MULTI) {
      const series = found.flatMap((key, i) => keySeries(RUNS[0], key, PALETTE[i % PALETTE.length], key, panel));
      new LineChart(grid, { title: panel.title, note: panel.note, yRange: panel.yRange, series });
      return;
    }
    for (const key of found) {
      new LineChart(grid, { title: found.length > 1 ? `${panel.title}: ${key}` : panel.title, note: panel.note, yRange: panel.yRange,
        series: RUNS.flatMap((run) => keySeries(run, key, run.color, run.name, panel)) });
    }
  }

  function renderCurves() {
    const keys = allKeys();
    const node = section("curves", "Training curves", `${MULTI ? "Each run in its own colour. " : ""}Dashed lines with dots are held-out evaluations; the slider at the top smooths the training curves. Hover for values.`);
    if (!keys.length) { node.append(h("p", { class: "empty" }, "No metrics.jsonl in these runs.")); return; }
    const skipped = RUNS.flatMap((run) => run.metrics.skipped.map((s) => `${MULTI ? `${run.name}: ` : ""}step ${s.step} (${s.reason})`));
    if (skipped.length) node.append(h("div", { class: "notice" }, `Skipped steps: ${skipped.join("; ")}`));
    if (RUNS.some((run) => Object.values(run.metrics.curves).some((c) => c.bucketed))) {
      node.append(h("p", { class: "lead" }, "Long runs are drawn as bucket means (at most 4000 points per curve); the tables use the logged values."));
    }
    const grid = h("div", { class: "grid" });
    node.append(grid);
    const used = new Set();
    for (const panel of PANELS) drawPanel(grid, panel, keys, used);
    const other = keys.filter((key) => !used.has(key) && !IGNORED.some((pattern) => pattern.test(key)));
    if (!other.length) return;
    node.append(h("h3", {}, "Other logged metrics"));
    const small = h("div", { class: "grid small" });
    node.append(small);
    const bases = other.filter((key) => !(key.startsWith("eval/") && other.includes(key.slice(5))));
    for (const key of bases) {
      const series = MULTI ? RUNS.flatMap((run) => keySeries(run, key, run.color, run.name, { smooth: true }))
        : keySeries(RUNS[0], key, PALETTE[0], key, { smooth: true });
      new LineChart(small, { title: key, series });
    }
  }

  // ---------------------------------------------------------------- data
  function summaryKey(summary) {
    return JSON.stringify({ splits: summary.splits, calibration: summary.calibration });
  }

  function renderData() {
    const node = section("data", "Data", "The pairs each run trained on (after validation, tokenization and data.limit), from data_summary.json.");
    const unique = new Map();
    for (const run of RUNS) {
      if (!run.data_summary) continue;
      const key = summaryKey(run.data_summary);
      if (!unique.has(key)) unique.set(key, { summary: run.data_summary, runs: [] });
      unique.get(key).runs.push(run);
    }
    if (!unique.size) { node.append(h("p", { class: "empty" }, "No data_summary.json in these runs (runs from before it was written).")); return; }
    let index = 0;
    for (const { summary, runs } of unique.values()) {
      if (MULTI) node.append(h("h3", {}, runs.length === RUNS.length ? "Shared by every run" : runs.map((run) => run.name).join(", ")));
      renderSummary(node, summary, index);
      index += 1;
    }
  }

  function groupRows(summary) {
    const rows = [];
    for (const [split, data] of Object.entries(summary.splits)) {
      for (const group of data.groups) rows.push({ split, ...group });
    }
    return rows;
  }

  function renderSummary(node, summary, index) {
    const rows = groupRows(summary);
    const columns = ["split", "modality", "source", { label: "pairs", num: true }, { label: "with scores", num: true }, { label: "with images", num: true },
      { label: "flipped", num: true, title: "chosen scored below rejected" }, { label: "ties", num: true },
      { label: "chosen score", num: true, title: "mean raw score" }, { label: "rejected score", num: true, title: "mean raw score" }, { label: "margin", num: true, title: "mean raw score margin" }];
    const body = rows.map((row) => {
      const raw = row.raw_scores || {};
      return h("tr", { "data-split": row.split, "data-group": `${row.modality}/${row.source}` }, cell(row.split), cell(row.modality), cell(row.source),
        cell(row.pairs, { "data-key": "pairs" }), cell(row.with_scores), cell(row.with_images), cell(raw.flipped), cell(raw.ties),
        cell(raw.chosen ? raw.chosen.mean : null, { "data-key": "chosen-mean" }), cell(raw.rejected ? raw.rejected.mean : null, { "data-key": "rejected-mean" }),
        cell(raw.margin ? raw.margin.mean : null, { "data-key": "margin-mean" }));
    });
    const notes = [];
    for (const [split, data] of Object.entries(summary.splits)) {
      if (data.left_out) notes.push(`${split}: ${data.left_out} of ${data.given} samples left out (tokenization or data.limit)`);
    }
    node.append(table(columns, body, { id: `data-${index}` }));
    if (notes.length) node.append(h("p", { class: "lead" }, notes.join("; ")));
    const grid = h("div", { class: "grid" });
    node.append(grid);
    const splits = Object.keys(summary.splits).filter((split) => summary.splits[split].pairs > 0);
    const categories = [...new Set(rows.map((row) => `${row.modality} · ${row.source}`))];
    if (categories.length * splits.length > 1) new BarChart(grid, { title: "Pairs by modality and source", categories,
      series: splits.map((split, i) => ({ label: split, color: PALETTE[i], values: categories.map((c) => { const row = rows.find((r) => r.split === split && `${r.modality} · ${r.source}` === c); return row ? row.pairs : 0; }) })) });
    const train = summary.splits.train || summary.splits[splits[0]];
    const calibrated = summary.calibration && summary.calibration !== "none";
    for (const group of train ? train.groups : []) {
      const name = `${group.modality} · ${group.source}`;
      for (const [field, label] of calibrated ? [["raw_scores", "raw"], ["calibrated_scores", summary.calibration]] : [["raw_scores", "raw"]]) {
        const scores = group[field];
        if (!scores || !scores.histogram.edges.length) continue;
        new BarChart(grid, { title: `Scores, ${name} (${label})`, note: `chosen mean ${fmt(scores.chosen.mean)}, rejected mean ${fmt(scores.rejected.mean)}`, edges: scores.histogram.edges,
          series: [{ label: "chosen", color: "#3ca951", counts: scores.histogram.chosen }, { label: "rejected", color: "#ff725c", counts: scores.histogram.rejected }] });
        new BarChart(grid, { title: `Score margin, ${name} (${label})`, note: `${scores.flipped} flipped (margin < 0), ${scores.ties} ties`, edges: scores.margin_histogram.edges,
          series: [{ label: "chosen − rejected", color: "#4269d0", counts: scores.margin_histogram.margin }] });
      }
    }
    const tokenRows = [];
    for (const [split, data] of Object.entries(summary.splits)) {
      if (!data.pairs) continue;
      for (const part of ["prompt", "chosen", "rejected"]) {
        const t = data.tokens[part];
        tokenRows.push([split, part, t.p50, t.p90, t.max, t.mean]);
      }
    }
    if (tokenRows.length) node.append(table(["split", "tokens of", { label: "p50", num: true }, { label: "p90", num: true }, { label: "max", num: true }, { label: "mean", num: true }], tokenRows, { id: `tokens-${index}`, caption: "Token lengths under the model's chat template" }));
  }

  // ---------------------------------------------------------------- generations
  function renderSamples() {
    const node = section("samples", "Generations", "Prompts the model did not train on (training prompts when a run had no held-out data), answered greedily at the end of training by the trained model and by its base (adapter off).");
    const byId = new Map();
    for (const run of RUNS) {
      for (const record of run.samples || []) {
        if (!byId.has(record.id)) byId.set(record.id, { record, answers: [] });
        byId.get(record.id).answers.push({ run, record });
      }
    }
    if (!byId.size) { node.append(h("p", { class: "empty" }, "No samples.jsonl in these runs.")); return; }
    for (const { record, answers } of byId.values()) {
      const images = (record.images || []).map((src, i) => h("img", { src, alt: `image ${i + 1} of ${record.id}` }));
      const score = (value) => (value === null || value === undefined ? "" : `score ${fmt(value)}`);
      const cards = [
        h("div", { class: "answer chosen" }, h("div", { class: "who" }, h("span", {}, "chosen"), h("span", { class: "score" }, score(record.score_chosen))), h("div", { class: "text" }, record.chosen)),
        h("div", { class: "answer rejected" }, h("div", { class: "who" }, h("span", {}, "rejected"), h("span", { class: "score" }, score(record.score_rejected))), h("div", { class: "text" }, record.rejected)),
      ];
      const base = answers.find((a) => typeof a.record.base === "string");
      if (base) cards.push(h("div", { class: "answer" }, h("div", { class: "who" }, h("span", {}, "base (adapter off)")), h("div", { class: "text" }, base.record.base || "(empty)")));
      for (const answer of answers) {
        cards.push(h("div", { class: "answer policy", "data-run": answer.run.name }, h("div", { class: "who" }, h("span", {}, MULTI ? `trained · ${answer.run.name}` : "trained"), h("span", {}, `≤ ${answer.record.generation ? answer.record.generation.max_new_tokens : "?"} tokens`)),
          h("div", { class: "text" }, answer.record.policy || "(empty)")));
      }
      node.append(h("div", { class: "card", "data-sample": record.id },
        h("div", { class: images.length ? "sample" : "sample noimage" }, images.length ? h("div", {}, images) : null,
          h("div", {}, h("div", {}, h("span", { class: "pill" }, record.split === "eval" ? "held out" : "training prompt"), h("span", { class: "pill" }, record.modality), h("span", { class: "pill" }, record.source), h("span", { class: "pill mono" }, record.id)),
            h("div", { class: "prompt" }, record.prompt), h("div", { class: "answers" }, cards)))));
    }
  }

  // ---------------------------------------------------------------- checkpoints and config
  function renderCheckpoints() {
    const node = section("checkpoints", "Checkpoints", "Complete checkpoints (manifest verified by size); load one with mmdpo export or mmdpo eval --model RUN.");
    const rows = [];
    for (const run of RUNS) {
      for (const c of run.checkpoints) rows.push([...(MULTI ? [runLabel(run)] : []), c.name, c.step, c.files, fmtBytes(c.bytes), h("code", { title: c.weights_sha256 || "" }, (c.weights_sha256 || "–").slice(0, 12)), c.written || "–", h("code", {}, c.path)]);
    }
    if (!rows.length) { node.append(h("p", { class: "empty" }, "No complete checkpoint.")); return; }
    node.append(table([...(MULTI ? ["run"] : []), "checkpoint", { label: "step", num: true }, { label: "files", num: true }, "size", "weights sha256", "written", "path"], rows, { id: "checkpoints" }));
  }

  function flatten(object, prefix, out) {
    for (const [key, value] of Object.entries(object || {})) {
      const name = prefix ? `${prefix}.${key}` : key;
      if (value && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length) flatten(value, name, out);
      else out.push([name, value]);
    }
    return out;
  }

  function configTables(config) {
    const grid = h("div", { class: "grid small" });
    for (const [name, value] of Object.entries(config)) {
      const rows = value && typeof value === "object" && !Array.isArray(value)
        ? flatten(value, "", []).map(([key, v]) => [h("code", {}, key), configValue(v)])
        : [[h("code", {}, name), configValue(value)]];
      grid.append(h("div", {}, table(["key", "value"], rows, { caption: name })));
    }
    return grid;
  }

  function renderConfig() {
    const node = section("config", "Configuration", "config.yaml of each run, as the engine resolved it.");
    const diffs = DATA.config_differences || [];
    if (MULTI && diffs.length) {
      node.append(table(["key", ...RUNS.map((run) => ({ label: run.name }))], diffs.map((key) => [h("code", {}, key), ...RUNS.map((run) => configValue(get(run.config, key)))]), { id: "config-differences", caption: "Settings that differ" }));
    }
    for (const run of RUNS) {
      if (!run.config) { node.append(h("p", { class: "empty" }, `${run.name}: no config.yaml`)); continue; }
      if (!MULTI) { node.append(configTables(run.config)); continue; }
      node.append(h("details", {}, h("summary", {}, `${run.name}: full configuration`), configTables(run.config)));
    }
  }

  // ---------------------------------------------------------------- page
  function renderNav() {
    const nav = document.getElementById("nav");
    const slider = h("input", { type: "range", min: "0", max: "0.95", step: "0.05", value: "0", "aria-label": "curve smoothing",
      oninput: (event) => { state.smoothing = Number(event.target.value); label.textContent = state.smoothing.toFixed(2); charts.forEach((c) => c.draw()); } });
    const label = h("span", {}, "0.00");
    nav.append(h("span", { class: "brand" }, "mmdpo"), ...sections.map((s) => h("a", { href: `#${s.id}` }, s.title)),
      h("span", { class: "controls" }, "smoothing", slider, label));
  }

  function guarded(name, render) {
    try {
      render();
    } catch (error) {
      document.getElementById("app").append(h("div", { class: "notice" }, `The ${name} section could not be drawn: ${error}`));
      console.error(error);
    }
  }

  renderHeader();
  guarded("summary tables", renderExtraTables);
  guarded("comparison", renderComparison);
  guarded("evaluation", renderEvals);
  guarded("curves", renderCurves);
  guarded("data", renderData);
  guarded("generations", renderSamples);
  guarded("checkpoints", renderCheckpoints);
  guarded("configuration", renderConfig);
  renderNav();
  document.getElementById("app").append(h("footer", {}, "One self-contained file: data, script and style are inside it; it makes no network request."));
  const drawAll = () => charts.forEach((chart) => chart.draw());
  drawAll();
  let pending = null;
  window.addEventListener("resize", () => { clearTimeout(pending); pending = setTimeout(drawAll, 80); });
  window.addEventListener("beforeprint", drawAll);
  document.body.dataset.charts = String(charts.length);
  document.body.dataset.ready = "1";
})();
