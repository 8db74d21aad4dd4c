// infergate console: reads the JSON the gateway serves and its /metrics,
// and draws them. Plain JavaScript, no dependencies, nothing loaded from
// elsewhere; server data reaches the page as text only (textContent and
// attributes), never as markup.
"use strict";

// METRICS names the metric families the console reads, in one place. A
// family is found under its name, or with "_total" added or removed, so
// that a counter renamed to end in _total is still read.
const METRICS = {
  requests: "infergate_requests_total",          // counter {model, version, protocol, code}
  latency: "infergate_request_duration_seconds", // histogram {model, version, protocol}
  queue: "infergate_batcher_queue_length",       // gauge {model, version}
  leader: "infergate_cluster_leader",            // gauge: 1 on the replica that leads
};

const REFRESH_MS = 5000;
const TOKEN_KEY = "infergate-admin-token";
const DRIFT_WINDOWS = 20;   // windows drawn per version
const CANARY_STEPS = 50;    // steps listed per model
const EVENTS = 50;          // events listed
const RUNS = 20;            // runs listed
const SVG_NS = "http://www.w3.org/2000/svg";

// ---------- DOM helpers ----------

// h makes an element: attrs are attributes ("class", "data-*", ...), and
// children are nodes or strings (set as text).
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  const key = attrs && attrs["data-key"];
  if (tag === "details" && key) {
    // A refresh redraws everything: what a person opened stays open.
    el.open = openDetails.has(key);
    el.addEventListener("toggle", () => (el.open ? openDetails.add(key) : openDetails.delete(key)));
  }
  return el;
}

// openDetails holds the data-key of every <details> the person opened.
const openDetails = new Set();

// s makes an SVG element as h does.
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function replace(id, ...children) {
  const el = document.getElementById(id);
  el.replaceChildren();
  append(el, children);
}

function badge(text, cls) { return h("span", { class: "badge " + (cls || text) }, text); }
function pct(x, digits = 1) { return Number.isFinite(x) ? (100 * x).toFixed(digits) + "%" : "—"; }
function num(x, digits = 3) { return Number.isFinite(x) ? Number(x.toPrecision(digits)).toString() : "—"; }
function ms(seconds) { return Number.isFinite(seconds) ? (1000 * seconds).toFixed(1) + " ms" : "—"; }
function when(t) {
  if (!t || t.startsWith("0001-")) return "—";
  const d = new Date(t);
  return isNaN(d) ? t : d.toLocaleString();
}
function note(text) { return h("p", { class: "muted" }, text); }

// ---------- the gateway's API ----------

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

// adminState is what the last admin request found: "none" (no token),
// "ok", "refused" (401) or "off" (the admin API is off: 404 from /admin/).
let adminState = token() ? "ok" : "none";

// api fetches path and returns {status, body}; admin requests carry the
// token and are not sent without one (status 0).
async function api(path, { admin = false, method = "GET", body } = {}) {
  const headers = {};
  if (admin) {
    if (!token()) return { status: 0, body: null };
    headers.Authorization = "Bearer " + token();
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  } catch (err) {
    return { status: -1, body: { error: String(err) } };
  }
  const text = await res.text();
  let parsed = text;
  if ((res.headers.get("Content-Type") || "").includes("json")) {
    try { parsed = JSON.parse(text); } catch { parsed = { error: text }; }
  }
  if (admin) {
    if (res.status === 401) adminState = "refused";
    else if (res.status === 404 && parsed && typeof parsed.error === "string" && parsed.error.startsWith("the admin API is off")) adminState = "off";
    else if (adminState !== "refused") adminState = "ok";
  }
  return { status: res.status, body: parsed };
}

// adminNote says why an admin section shows nothing.
function adminNote(res, what) {
  if (res.status === 0) return note("Enter the admin token to see " + what + ".");
  if (res.status === 401) return note("The admin token was refused (401): " + what + " not shown.");
  const err = res.body && res.body.error ? res.body.error : "status " + res.status;
  return note("Cannot read " + what + ": " + err);
}

// ---------- Prometheus text ----------

// parseMetrics parses the Prometheus text format into a map from series
// name to [{labels, value}], skipping comments (# HELP, # TYPE).
function parseMetrics(text) {
  const out = new Map();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3])) !== null) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    const value = Number(m[4]);
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value });
  }
  return out;
}

// series returns the samples of family name (see METRICS), with suffix
// ("_bucket", "_count") for a histogram's series.
function series(metrics, name, suffix = "") {
  const base = name.replace(/_total$/, "");
  for (const n of [name, base, base + "_total"]) {
    const got = metrics.get(n + suffix);
    if (got) return got;
  }
  return [];
}

const vkey = (model, version) => model + "\u0000" + version;

// versionStats sums the metrics per model version: requests, errors (a
// code other than 2xx), queue length and latency buckets.
function versionStats(metrics) {
  const stats = new Map();
  const get = (l) => {
    const k = vkey(l.model, l.version);
    if (!stats.has(k)) stats.set(k, { model: l.model, version: l.version, requests: 0, errors: 0, queue: 0, buckets: new Map() });
    return stats.get(k);
  };
  for (const { labels, value } of series(metrics, METRICS.requests)) {
    if (!labels.model) continue;
    const st = get(labels);
    st.requests += value;
    if (!String(labels.code || "").startsWith("2")) st.errors += value;
  }
  for (const { labels, value } of series(metrics, METRICS.queue)) {
    if (labels.model) get(labels).queue += value;
  }
  for (const { labels, value } of series(metrics, METRICS.latency, "_bucket")) {
    if (!labels.model) continue;
    const st = get(labels);
    const le = labels.le === "+Inf" ? Infinity : Number(labels.le);
    st.buckets.set(le, (st.buckets.get(le) || 0) + value);
  }
  return stats;
}

// quantile returns the upper bound of the bucket holding quantile q of a
// cumulative histogram (le -> count), or NaN without observations.
function quantile(buckets, q) {
  const les = [...buckets.keys()].sort((a, b) => a - b);
  const total = buckets.get(Infinity) || (les.length ? buckets.get(les[les.length - 1]) : 0);
  if (!total) return NaN;
  for (const le of les) if (buckets.get(le) >= q * total) return le;
  return NaN;
}

// ---------- overview ----------

let lastScrape = null; // {at, stats}

async function renderOverview() {
  const res = await api("/metrics");
  if (res.status !== 200) {
    replace("overview-body", note("Cannot read /metrics: status " + res.status));
    return [];
  }
  const metrics = parseMetrics(res.body);
  const stats = versionStats(metrics);
  const now = performance.now();
  const prev = lastScrape;
  lastScrape = { at: now, stats };
  const leads = series(metrics, METRICS.leader)[0];
  const cluster = await api("/admin/cluster", { admin: true });
  let leader = leads ? (leads.value === 1 ? "this replica leads" : "this replica follows") : "";
  if (cluster.status === 200 && cluster.body.leader) leader = "leader: " + cluster.body.leader + (leads ? " (" + leader + ")" : "");
  replace("leader", leader);

  const models = [...new Set([...stats.values()].map((v) => v.model))].sort();
  const rows = [];
  for (const model of models) {
    const versions = [...stats.values()].filter((v) => v.model === model).sort((a, b) => Number(a.version) - Number(b.version) || a.version.localeCompare(b.version));
    const total = versions.reduce((n, v) => n + v.requests, 0);
    for (const v of versions) {
      const share = total > 0 ? v.requests / total : 0;
      const before = prev && prev.stats.get(vkey(v.model, v.version));
      const rate = before ? (v.requests - before.requests) / ((now - prev.at) / 1000) : NaN;
      rows.push(h("tr", { class: "version-row", "data-model": model, "data-version": v.version, "data-requests": v.requests },
        h("td", {}, model), h("td", {}, v.version),
        h("td", { class: "num" }, v.requests),
        h("td", { class: "num share", "data-share": share }, pct(share)),
        h("td", { class: "num" }, Number.isFinite(rate) ? rate.toFixed(1) : "—"),
        h("td", { class: "num" }, ms(quantile(v.buckets, 0.99))),
        h("td", { class: "num" }, pct(v.requests > 0 ? v.errors / v.requests : NaN, 2)),
        h("td", { class: "num" }, v.queue)));
    }
  }
  replace("overview-body", rows.length === 0 ? note("No model has served a request yet.") :
    h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "model"), h("th", {}, "version"), h("th", { class: "num" }, "requests"),
        h("th", { class: "num" }, "share of model's requests"), h("th", { class: "num" }, "req/s"), h("th", { class: "num" }, "p99"),
        h("th", { class: "num" }, "error rate"), h("th", { class: "num" }, "queue"))),
      h("tbody", {}, rows)));
  return models;
}

// ---------- routing ----------

// weightChart draws the canary's weight over its steps, oldest first.
function weightChart(steps) {
  const W = 560, H = 110, P = 24;
  if (steps.length === 0) return null;
  const t0 = Date.parse(steps[0].time), t1 = Date.parse(steps[steps.length - 1].time);
  const x = (t) => P + (t1 > t0 ? ((Date.parse(t) - t0) / (t1 - t0)) * (W - 2 * P) : (W - 2 * P) / 2);
  const y = (w) => H - P - (w / 100) * (H - 2 * P);
  let d = "";
  steps.forEach((st, i) => {
    d += (i === 0 ? "M" : "L") + x(st.time).toFixed(1) + " " + y(st.weight_before).toFixed(1);
    d += "L" + x(st.time).toFixed(1) + " " + y(st.weight_after).toFixed(1);
  });
  return s("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "weight-chart" },
    s("line", { class: "axis", x1: P, y1: y(0), x2: W - P, y2: y(0) }),
    s("line", { class: "axis", x1: P, y1: y(100), x2: W - P, y2: y(100) }),
    s("text", { x: 2, y: y(100) + 3 }, "100%"), s("text", { x: 8, y: y(0) + 3 }, "0%"),
    s("path", { class: "weight", d }),
    steps.map((st) => s("circle", { cx: x(st.time), cy: y(st.weight_after), r: 3, class: st.checks.some((c) => c.status === "failed") ? "drifted" : "clean" },
      s("title", {}, `${st.step} at ${when(st.time)}: ${st.weight_before}% -> ${st.weight_after}%`))));
}

function checkCell(c) {
  const shown = c.status === "skipped" ? c.detail : `${num(c.measured)} vs ${num(c.threshold)}`;
  return h("div", { class: "check", "data-check": c.name, "data-status": c.status }, badge(c.status), c.name + ": " + shown);
}

async function renderRouting() {
  const res = await api("/admin/models", { admin: true });
  if (res.status !== 200) {
    replace("routing-body", adminNote(res, "the routing, the canary's steps and the shadow comparison"));
    return;
  }
  const parts = [];
  for (const m of res.body) {
    const r = m.routing;
    const split = Object.entries(r.effective_split || {}).map(([v, w]) => `${v}: ${w}`).join(", ");
    parts.push(h("h3", {}, m.model_name, " ", h("span", { class: "muted" }, `routing from ${r.source}; split now ${split || "—"}`)));
    parts.push(h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "version"), h("th", { class: "num" }, "weight"), h("th", {}, "shadow"), h("th", {}, "drift monitored"))),
      h("tbody", {}, m.versions.map((v) => h("tr", { class: "routing-row", "data-model": m.model_name, "data-version": v.version, "data-weight": v.weight },
        h("td", {}, v.version), h("td", { class: "num" }, pct(v.weight / 100)), h("td", {}, v.shadow ? "yes" : ""), h("td", {}, v.drift_monitored ? "yes" : ""))))));
    if (r.canary) {
      const c = r.canary;
      parts.push(h("p", {}, "Canary ", h("b", {}, c.config.version), " ", badge(c.phase, c.phase === "progressing" ? "running" : c.phase),
        ` at ${c.weight}% (${c.failed_checks} of ${c.config.threshold} failed checks); ${c.reason || ""}`));
    }
    const steps = await api(`/admin/models/${encodeURIComponent(m.model_name)}/canary/steps?limit=${CANARY_STEPS}`, { admin: true });
    if (steps.status === 200 && steps.body.items.length > 0) {
      const items = steps.body.items;
      parts.push(h("h4", {}, "Canary steps"), weightChart(items.map((it) => it.data).reverse()));
      parts.push(h("table", { class: "canary-steps", "data-model": m.model_name },
        h("thead", {}, h("tr", {}, h("th", {}, "time"), h("th", {}, "version"), h("th", {}, "step"), h("th", {}, "weight"), h("th", {}, "checks"), h("th", {}, "reason"))),
        h("tbody", {}, items.map((it) => {
          const st = it.data;
          return h("tr", { class: "canary-step", "data-seq": it.seq, "data-step": st.step, "data-weight-before": st.weight_before, "data-weight-after": st.weight_after },
            h("td", {}, when(st.time)), h("td", {}, st.version), h("td", {}, badge(st.step)),
            h("td", {}, `${st.weight_before}% → ${st.weight_after}%`),
            h("td", {}, st.checks.length ? st.checks.map(checkCell) : h("span", { class: "muted" }, "none judged")),
            h("td", {}, st.reason || ""));
        }))));
    } else if (steps.status !== 200) {
      parts.push(adminNote(steps, "the canary's steps"));
    }
    const shadow = await api(`/admin/models/${encodeURIComponent(m.model_name)}/shadow`, { admin: true });
    if (shadow.status === 200 && shadow.body.shadows.length > 0) {
      parts.push(h("h4", {}, "Shadow comparison"), h("table", {},
        h("thead", {}, h("tr", {}, ["version", "mirrored", "compared rows", "agreement", "mean |diff|", "shadow latency", "primary latency", "dropped", "failed"].map((t) => h("th", {}, t)))),
        h("tbody", {}, shadow.body.shadows.map((sh) => h("tr", { class: "shadow-row", "data-version": sh.version },
          h("td", {}, sh.version), h("td", { class: "num" }, sh.mirrored), h("td", { class: "num" }, sh.compared_rows),
          h("td", { class: "num" }, pct(sh.agreement, 2)), h("td", { class: "num" }, num(sh.mean_abs_diff)),
          h("td", { class: "num" }, sh.shadow_latency_ms.toFixed(2) + " ms"), h("td", { class: "num" }, sh.primary_latency_ms.toFixed(2) + " ms"),
          h("td", { class: "num" }, sh.dropped), h("td", { class: "num" }, sh.failed))))));
    }
  }
  replace("routing-body", parts.length ? parts : note("No models."));
}

// ---------- drift ----------

const HIST_W = 360, HIST_H = 120;

// histogram draws a feature's window counts over the reference's, each as
// shares of their totals on one scale; every bar carries its count.
function histogram(f) {
  const cur = f.counts || [], ref = f.reference_counts || [];
  const n = Math.max(cur.length, ref.length);
  const curTotal = cur.reduce((a, b) => a + b, 0), refTotal = ref.reduce((a, b) => a + b, 0);
  const share = (c, total) => (total > 0 ? c / total : 0);
  let maxShare = 0;
  for (let i = 0; i < n; i++) maxShare = Math.max(maxShare, share(cur[i] || 0, curTotal), share(ref[i] || 0, refTotal));
  const bw = HIST_W / Math.max(n, 1);
  const height = (c, total) => (maxShare > 0 ? (share(c, total) / maxShare) * HIST_H : 0);
  const label = (i) => {
    if (f.categories) return i < f.categories.length ? `category ${f.categories[i]}` : "unseen";
    const e = f.edges || [];
    if (i === 0) return `below ${num(e[0])}`;
    if (i >= e.length) return `above ${num(e[e.length - 1])}`;
    return `${num(e[i - 1])} to ${num(e[i])}`;
  };
  const bars = [];
  for (let i = 0; i < n; i++) {
    const rh = height(ref[i] || 0, refTotal), ch = height(cur[i] || 0, curTotal);
    bars.push(s("rect", { class: "ref", "data-bin": i, "data-count": ref[i] || 0, x: i * bw + 1, y: HIST_H - rh, width: Math.max(bw - 2, 1), height: rh },
      s("title", {}, `reference, ${label(i)}: ${ref[i] || 0} of ${refTotal}`)));
    bars.push(s("rect", { class: "cur", "data-bin": i, "data-count": cur[i] || 0, x: i * bw + bw * 0.25, y: HIST_H - ch, width: Math.max(bw * 0.5, 1), height: ch },
      s("title", {}, `window, ${label(i)}: ${cur[i] || 0} of ${curTotal}`)));
  }
  const e = f.edges || [];
  const ticks = f.categories ? [] : [[bw, e[0]], [HIST_W - bw, e[e.length - 1]]].filter(([, v]) => Number.isFinite(v));
  return s("svg", { class: "histogram", width: HIST_W, height: HIST_H + 14, viewBox: `0 0 ${HIST_W} ${HIST_H + 14}`,
    "data-max-share": maxShare, "data-chart-height": HIST_H, "data-window-total": curTotal, "data-reference-total": refTotal },
    s("line", { class: "axis", x1: 0, y1: HIST_H + 1, x2: HIST_W, y2: HIST_H + 1 }), bars,
    ticks.map(([x, v]) => s("text", { x, y: HIST_H + 12, "text-anchor": "middle" }, num(v))));
}

// statisticChart draws a feature's statistic over the windows, oldest
// first, with its threshold; drifted windows are red.
function statisticChart(points) {
  const W = 360, H = 80, P = 6;
  const stat = (points.find((p) => p.statistic) || {}).statistic || "statistic";
  // A p-value drifts below its threshold: drawn as -log10(p), higher is
  // more drift, as a distance above its threshold is.
  const pvalue = stat.endsWith("p_value");
  const tf = (v) => (pvalue ? -Math.log10(Math.max(v, 1e-300)) : v);
  points = points.map((p) => ({ ...p, raw: p.value, value: tf(p.value), threshold: tf(p.threshold) }));
  const vals = points.flatMap((p) => [p.value, p.threshold]).filter(Number.isFinite);
  if (vals.length === 0) return null;
  const lo = Math.min(0, ...vals), hi = Math.max(...vals) * 1.1 || 1;
  const x = (i) => P + (points.length > 1 ? (i / (points.length - 1)) * (W - 2 * P) : (W - 2 * P) / 2);
  const y = (v) => H - P - ((v - lo) / (hi - lo)) * (H - 2 * P);
  const line = points.map((p, i) => (i ? "L" : "M") + x(i).toFixed(1) + " " + y(p.value).toFixed(1)).join("");
  const thr = points.map((p, i) => (i ? "L" : "M") + x(i).toFixed(1) + " " + y(p.threshold).toFixed(1)).join("");
  return [s("svg", { class: "statistic-chart", width: W, height: H, viewBox: `0 0 ${W} ${H}` },
    s("path", { class: "threshold", d: thr, fill: "none" }), s("path", { class: "line", d: line }),
    points.map((p, i) => s("circle", { cx: x(i), cy: y(p.value), r: 2.5, class: p.drifted ? "drifted" : "clean", "data-window": p.window },
      s("title", {}, `window ${p.window} (${when(p.end)}): ${p.statistic} ${num(p.raw)}${p.drifted ? ", drifted" : ""}`)))),
  h("p", { class: "caption" }, `${pvalue ? "−log10 " : ""}${stat} over the last ${points.length} windows, oldest first; dashed: the threshold; red: drifted`)];
}

async function renderDrift(models) {
  const parts = [];
  for (const model of models) {
    const rep = await api(`/v2/models/${encodeURIComponent(model)}/drift`);
    if (rep.status !== 200 || !rep.body.versions || rep.body.versions.length === 0) continue;
    for (const v of rep.body.versions) {
      const res = await api(`/v2/models/${encodeURIComponent(model)}/versions/${encodeURIComponent(v.model_version)}/drift/windows?limit=${DRIFT_WINDOWS}`);
      parts.push(h("h3", {}, `${model} version ${v.model_version} `, v.drifted ? badge("drifted") : badge("no drift", "ok"),
        h("span", { class: "muted" }, ` ${v.windows_judged} windows judged, ${v.windows_skipped} skipped; open window ${v.current.window} has ${v.current.rows} rows`)));
      if (res.status !== 200) { parts.push(note("Cannot read the drift windows: " + (res.body.error || res.status))); continue; }
      const items = res.body.items.filter((it) => it.data.judged);
      if (items.length === 0) { parts.push(note("No window judged yet.")); continue; }
      const last = items[0];
      const oldestFirst = items.slice().reverse();
      const drifts = items.filter((it) => it.data.drifted);
      parts.push(h("p", {}, `Window ${last.data.window}, ${when(last.data.start)} to ${when(last.data.end)}: ${last.data.rows} rows, `,
        `${pct(last.data.drift_share)} of features drifted (rule ${last.data.rule && last.data.rule.name || "—"}). `,
        h("span", { class: "legend" }, h("span", {}, h("i", { class: "legend-ref" }), "reference"), h("span", {}, h("i", { class: "legend-cur" }), "window"))));
      parts.push(h("div", { class: "grid" }, last.data.features.map((f) => {
        const points = oldestFirst.map((it) => {
          const g = it.data.features.find((x) => x.name === f.name) || {};
          return { window: it.data.window, end: it.data.end, value: g.value, threshold: g.threshold, drifted: g.drifted, statistic: g.statistic };
        });
        return h("div", { class: "feature" + (f.drifted ? " drifted" : ""), "data-model": model, "data-version": v.model_version, "data-feature": f.name, "data-seq": last.seq, "data-window": last.data.window },
          h("h4", {}, f.name, f.prediction ? " (prediction) " : " ", f.drifted ? badge("drifted") : "",
            h("span", { class: "muted" }, ` ${f.statistic} ${num(f.value)} (threshold ${num(f.threshold)}, ${f.method})`)),
          histogram(f), statisticChart(points));
      })));
      parts.push(h("h4", {}, "Drifted windows"), drifts.length === 0 ? note(`None of the last ${items.length}.`) :
        h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "window"), h("th", {}, "ended"), h("th", { class: "num" }, "rows"), h("th", {}, "drifted features"))),
          h("tbody", {}, drifts.map((it) => h("tr", { class: "drifted-window", "data-window": it.data.window },
            h("td", {}, it.data.window), h("td", {}, when(it.data.end)), h("td", { class: "num" }, it.data.rows),
            h("td", {}, it.data.features.filter((f) => f.drifted).map((f) => f.name).join(", ")))))));
    }
  }
  replace("drift-body", parts.length ? parts : note("No version is monitored for drift (a version needs a reference.json)."));
}

// ---------- outbox ----------

async function redrive(eventID, target, button) {
  button.disabled = true;
  const res = await api("/admin/webhooks/redrive", { admin: true, method: "POST", body: { event_id: eventID, target } });
  button.replaceWith(res.status === 200 ? badge("redriven", "ok") : badge("redrive refused: " + (res.body && res.body.error || res.status), "failed"));
  setTimeout(refresh, 500);
}

async function renderOutbox() {
  const [events, hooks] = await Promise.all([api(`/admin/webhooks/events?limit=${EVENTS}`, { admin: true }), api("/admin/webhooks", { admin: true })]);
  const parts = [];
  if (hooks.status === 200) {
    parts.push(h("p", {}, `${hooks.body.pending} deliveries pending, ${hooks.body.dead_letters.length} dead letters.`));
    if (hooks.body.dead_letters.length > 0) {
      parts.push(h("h3", {}, "Dead letters"), h("table", {},
        h("thead", {}, h("tr", {}, ["dead since", "event", "type", "subject", "target", "attempts", "last error", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, hooks.body.dead_letters.map((dl) => h("tr", { class: "dead-letter", "data-event-id": dl.event_id, "data-target": dl.target },
          h("td", {}, when(dl.dead_at)), h("td", {}, h("code", {}, dl.event_id)), h("td", {}, dl.event_type), h("td", {}, dl.subject || ""),
          h("td", {}, dl.target), h("td", { class: "num" }, dl.attempts), h("td", {}, dl.last_error),
          h("td", {}, h("button", { type: "button", class: "redrive", onclick: (e) => redrive(dl.event_id, dl.target, e.currentTarget) }, "Redrive")))))));
    }
  } else if (hooks.status === 404 && adminState === "ok") {
    parts.push(note("No webhooks are configured."));
  } else {
    parts.push(adminNote(hooks, "the webhooks and dead letters"));
  }
  if (events.status === 200) {
    parts.push(h("h3", {}, "Recent events"), events.body.items.length === 0 ? note("No events yet.") : h("table", {},
      h("thead", {}, h("tr", {}, ["time", "type", "subject", "replica", "deliveries", "data"].map((t) => h("th", {}, t)))),
      h("tbody", {}, events.body.items.map((it) => {
        const e = it.data;
        return h("tr", { class: "event", "data-event-id": e.id, "data-seq": it.seq },
          h("td", {}, when(e.time)), h("td", {}, e.type.replace(/^dev\.infergate\./, "")), h("td", {}, e.subject),
          h("td", {}, e.replica || ""),
          h("td", {}, it.deliveries.length === 0 ? h("span", { class: "muted" }, "no webhooks") : it.deliveries.map((d) =>
            h("div", { class: "delivery", "data-target": d.target, "data-status": d.status }, badge(d.status), `${d.target}: ${d.attempts} attempts`,
              d.last_error ? h("div", { class: "muted" }, d.last_error) : null))),
          h("td", {}, h("details", { "data-key": "event-" + e.id }, h("summary", {}, "data"), h("pre", {}, JSON.stringify(e.data, null, 1)))));
      }))));
  } else {
    parts.push(adminNote(events, "the recent events"));
  }
  replace("outbox-body", parts);
}

// ---------- retrain runs ----------

async function renderRuns() {
  const res = await api(`/admin/retrain/runs?limit=${RUNS}`, { admin: true });
  if (res.status !== 200) {
    replace("runs-body", adminNote(res, "the retrain runs"));
    return;
  }
  if (res.body.items.length === 0) {
    replace("runs-body", note("No retrain runs yet."));
    return;
  }
  replace("runs-body", res.body.items.map((r) => {
    const m = r.metrics;
    return h("div", { class: "run", "data-run": r.id },
      h("h3", {}, `run ${r.id} of ${r.model} `, badge(r.outcome.toLowerCase()),
        h("span", { class: "muted" }, ` queued ${when(r.queued)}, started ${when(r.started)}, finished ${when(r.finished)}` +
          (r.candidate_version ? `; candidate version ${r.candidate_version}` : "") + (r.reason ? `; ${r.reason}` : ""))),
      m ? h("p", {}, `Validation against version ${m.base_version}: recent accuracy ${pct(m.recent_accuracy)} (current ${pct(m.base_recent_accuracy)}), `,
        `holdout ${pct(m.holdout_accuracy)} (current ${pct(m.base_holdout_accuracy)}), p99 ${m.latency_p99}; `,
        `${m.train_rows} rows trained on, ${m.recent_rows} recent`) : null,
      h("table", {}, h("thead", {}, h("tr", {}, ["step", "start", "duration", "log"].map((t) => h("th", {}, t)))),
        h("tbody", {}, (r.steps || []).map((st) => h("tr", { class: "run-step", "data-step": st.name },
          h("td", {}, st.name, st.error ? badge("failed") : ""), h("td", {}, when(st.start)), h("td", {}, st.duration),
          h("td", {}, st.error ? h("div", {}, st.error) : null, (st.log || []).length ? h("details", { "data-key": `run-${r.id}-${st.name}` }, h("summary", {}, `${st.log.length} lines`), h("pre", {}, st.log.join("\n"))) : ""))))));
  }));
}

// ---------- the page ----------

function renderBanner() {
  const msgs = {
    none: ["", "No admin token: showing the metrics and drift only. Enter the admin token to see routing, the outbox and retrain runs, and to redrive dead letters; without it the console changes nothing."],
    refused: ["error", "The admin token was refused (401). Enter the right one; the console changes nothing without it."],
    off: ["", "The admin API is off on this gateway (admin.token_env is not set): only the metrics and drift are shown."],
  };
  const m = msgs[adminState];
  replace("banner", m ? h("div", { class: m[0], "data-admin": adminState }, m[1]) : null);
}

let refreshing = null;
let refreshes = 0;

async function refresh() {
  if (refreshing) return refreshing;
  refreshing = (async () => {
    if (!token()) adminState = "none";
    else if (adminState === "none") adminState = "ok";
    const models = await renderOverview();
    await Promise.all([renderRouting(), renderDrift(models), renderOutbox(), renderRuns()]);
    renderBanner();
    replace("refreshed", new Date().toLocaleTimeString());
    document.body.dataset.refreshes = String(++refreshes);
  })();
  try { await refreshing; } finally { refreshing = null; }
}

document.addEventListener("DOMContentLoaded", () => {
  replace("refresh-every", REFRESH_MS / 1000 + " s");
  document.getElementById("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = document.getElementById("token");
    if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    adminState = "ok";
    refresh();
  });
  document.getElementById("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    adminState = "none";
    refresh();
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
});
