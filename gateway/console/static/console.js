/* Raven console. Plain JavaScript, no dependencies, nothing loaded from elsewhere.
 *
 * It is a client of Raven's public REST API like any other: the API key lives in sessionStorage
 * (this tab only) and leaves the page only as an `Authorization: Bearer` header on same-origin
 * `/v1/...` calls; it is never put in a URL, never logged, and signing out forgets it. Every view
 * costs a handful of requests (aggregation happens server-side in GET /v1/usage); the only timer
 * refreshes the Overview every 30 s while the tab is visible.
 */
"use strict";

(() => {
  const STORAGE_KEY = "raven.console.key";
  const REFRESH_MS = 30000;
  const PAGE_SIZE = 25;
  const PALETTE = ["#2f5bd8", "#e07a1f", "#1d9a6c", "#b8407a", "#7a5bd8", "#c9a227", "#2aa3b8", "#7b8794"];
  const state = { key: null, me: null, models: null, timer: null, lastFocus: null };

  // ------------------------------------------------------------------------------ DOM helpers
  function h(tag, attrs, ...children) {
    const svg = tag.startsWith("svg:");
    const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4)) : document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
      else if (name === "text") el.textContent = value;
      else if (name === "class" && !svg) el.className = value;
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }
  const $ = (sel, root = document) => root.querySelector(sel);

  // ------------------------------------------------------------------------------ formatting
  const intFmt = new Intl.NumberFormat("en-US");
  const currency = () => {
    const m = (state.models || []).find((x) => x.pricing && x.pricing.currency);
    return m ? m.pricing.currency : "credits";
  };
  const num = (v) => (v === null || v === undefined || v === "" ? NaN : Number(v));
  function fmtInt(v) { const n = num(v); return Number.isFinite(n) ? intFmt.format(Math.round(n)) : "—"; }
  function fmtDecimal(v) {
    const n = num(v);
    if (!Number.isFinite(n)) return "—";
    if (n === 0) return "0";
    const abs = Math.abs(n);
    const opts = abs >= 1000 ? { maximumFractionDigits: 2 } : abs >= 1 ? { maximumFractionDigits: 6 }
      : { maximumSignificantDigits: 4 };
    return new Intl.NumberFormat("en-US", opts).format(n);
  }
  function fmtMoney(v) { return `${fmtDecimal(v)} ${currency()}`; }
  function fmtMs(v) {
    const n = num(v);
    if (!Number.isFinite(n)) return "—";
    return n < 1000 ? `${intFmt.format(Math.round(n))} ms` : `${(n / 1000).toFixed(n < 10000 ? 2 : 1)} s`;
  }
  function toDate(v) {
    if (v === null || v === undefined || v === "") return null;
    const d = typeof v === "number" ? new Date(v < 1e12 ? v * 1000 : v) : new Date(v);
    return Number.isNaN(d.getTime()) ? null : d;
  }
  function fmtTime(v) {
    const d = toDate(v);
    return d ? `${d.toISOString().slice(0, 16).replace("T", " ")} UTC` : "—";
  }
  function fmtIn(v) {
    const d = toDate(v);
    if (!d) return "";
    let s = Math.round((d.getTime() - Date.now()) / 1000);
    if (s <= 0) return "now";
    const days = Math.floor(s / 86400); s -= days * 86400;
    const hours = Math.floor(s / 3600); s -= hours * 3600;
    const mins = Math.ceil(s / 60);
    if (days) return `in ${days} d ${hours} h`;
    if (hours) return `in ${hours} h ${mins} min`;
    return `in ${mins} min`;
  }
  const limitText = (v, unit) => (!v ? `unlimited${unit ? ` ${unit}` : ""}` : `${fmtInt(v)}${unit ? ` ${unit}` : ""}`);
  const isoDay = (d) => d.toISOString().slice(0, 10);

  /** Start of the current calendar window in UTC: day, week (from Monday) or month. */
  function windowStart(period, now = new Date()) {
    const d = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()));
    if (period === "week") d.setUTCDate(d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
    if (period === "month") d.setUTCDate(1);
    return d;
  }

  // ------------------------------------------------------------------------------ API
  class ApiError extends Error {
    constructor(status, message, code) { super(message); this.status = status; this.code = code; }
  }

  async function api(method, path, { query, body } = {}) {
    const url = new URL(path, window.location.origin);
    for (const [k, v] of Object.entries(query || {})) {
      if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
    }
    const headers = { authorization: `Bearer ${state.key}`, accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    let res;
    try {
      res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store", credentials: "omit", redirect: "error", referrerPolicy: "no-referrer" });
    } catch (err) {
      throw new ApiError(0, "Raven is not reachable. Check that the server is running, then retry.");
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (err) { data = null; }
    if (!res.ok) {
      const e = data && data.error ? data.error : {};
      const error = new ApiError(res.status, e.message || `HTTP ${res.status}`, e.code || null);
      if (res.status === 401 && path !== "/v1/key") signOut("Your key was rejected (revoked or expired). Sign in again.");
      throw error;
    }
    return { data, headers: res.headers };
  }

  async function loadModels() {
    if (!state.models) {
      const { data } = await api("GET", "/v1/models");
      state.models = (data && data.data) || [];
    }
    return state.models;
  }

  // ------------------------------------------------------------------------------ sign in / out
  function showSignIn(message) {
    $("#app").hidden = true;
    $("#signin").hidden = false;
    $("#signin-error").textContent = message || "";
    $("#signin-key").value = "";
    $("#signin-key").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(STORAGE_KEY);
    Object.assign(state, { key: null, me: null, models: null });
    stopTimer();
    $("#main").replaceChildren();
    showSignIn(message);
  }

  async function signIn(key) {
    state.key = key;
    const { data } = await api("GET", "/v1/key");
    state.me = data.data;
    sessionStorage.setItem(STORAGE_KEY, key);
    $("#signin").hidden = true;
    $("#app").hidden = false;
    $("#whoami").textContent = `${state.me.name || "key"} · ${state.me.id}${isAdmin() ? " · admin" : ""}`;
  }

  const isAdmin = () => !!(state.me && (state.me.scopes || []).includes("admin"));

  // ------------------------------------------------------------------------------ router
  const VIEWS = { overview, usage, logs, keys, models };
  const TITLES = { overview: "Overview", usage: "Usage", logs: "Logs", keys: "API Keys", models: "Models" };

  function stopTimer() { if (state.timer) { clearInterval(state.timer); state.timer = null; } }

  async function route(focus) {
    if (!state.key) return;
    const match = window.location.hash.match(/^#\/([a-z]+)/);
    const name = match && VIEWS[match[1]] ? match[1] : "overview";
    stopTimer();
    document.title = `${TITLES[name]} · Raven console`;
    for (const a of document.querySelectorAll(".sidenav a")) {
      if (a.dataset.view === name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    const main = $("#main");
    main.dataset.view = name;
    main.setAttribute("aria-busy", "true");
    main.replaceChildren(h("p", { class: "muted", text: "Loading…" }));
    try {
      await VIEWS[name](main);
    } catch (err) {
      if (!state.key) return;
      main.replaceChildren(h("div", { class: "card" }, h("h1", { text: TITLES[name] }),
        h("p", { class: "error", role: "alert", text: err.message }),
        h("button", { type: "button", onclick: () => route(true), text: "Retry" })));
    } finally {
      main.removeAttribute("aria-busy");
    }
    if (focus) main.focus();
  }

  // ------------------------------------------------------------------------------ small widgets
  function stat(label, field, value, unit, sub, meter) {
    const m = meter === undefined || meter === null ? null
      : h("div", { class: `meter${meter >= 0.95 ? " bad" : meter >= 0.8 ? " warn" : ""}`, role: "presentation" }, h("span"));
    if (m) m.firstChild.style.width = `${Math.min(100, Math.max(0, meter * 100)).toFixed(1)}%`;
    return h("div", { class: "stat", "data-field": field },
      h("div", { class: "label", text: label }),
      h("div", { class: "value" }, h("span", { class: "num", text: value }), unit ? h("span", { class: "unit muted" }, " ", unit) : null),
      sub ? h("div", { class: "sub", text: sub }) : null, m);
  }

  function table(columns, rows, { caption, onRow, label } = {}) {
    const head = h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null, text: c.label })));
    const body = rows.map((row) => {
      const tr = h("tr", { class: onRow ? "clickable" : null },
        columns.map((c) => {
          const v = c.render ? c.render(row) : row[c.key];
          return h("td", { class: c.num ? "num" : null }, v instanceof Node ? v : String(v ?? "—"));
        }));
      if (onRow) tr.addEventListener("click", (ev) => { if (!ev.target.closest("button")) onRow(row); });
      return tr;
    });
    return h("div", { class: "tablewrap", tabindex: "0", role: "region", "aria-label": label || caption || "table" },
      h("table", {}, caption ? h("caption", { text: caption }) : null, h("thead", {}, head), h("tbody", {}, body)));
  }

  function empty(title, what) {
    return h("div", { class: "card empty" }, h("strong", { text: title }), h("span", { text: what }));
  }

  function pagehead(title, ...actions) {
    return h("div", { class: "pagehead" }, h("h1", { text: title }), actions);
  }

  // ------------------------------------------------------------------------------ dialog
  function openDialog(title, body, actions) {
    const dialog = $("#dialog");
    state.lastFocus = document.activeElement;
    $("#dialog-title").textContent = title;
    $("#dialog-body").replaceChildren(body);
    $("#dialog-error").textContent = "";
    $("#dialog-actions").replaceChildren(...actions);
    if (!dialog.open) dialog.showModal();
    const first = dialog.querySelector("input, select, textarea, button.primary, button");
    if (first) first.focus();
    return dialog;
  }

  function closeDialog() {
    const dialog = $("#dialog");
    if (dialog.open) dialog.close();
  }

  /** Whatever the dialog showed (a secret, a form) leaves the page with it. */
  function clearDialog() {
    $("#dialog-body").replaceChildren();
    $("#dialog-actions").replaceChildren();
    $("#dialog-error").textContent = "";
  }

  function dialogError(message) { $("#dialog-error").textContent = message; }

  function secretBlock(label, secret) {
    const code = h("code", { class: "mono", "data-secret": "", text: secret });
    const button = h("button", { type: "button", class: "small", text: "Copy",
      "aria-label": `Copy ${label.toLowerCase()}` });
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(secret);
      } catch (err) {
        const range = document.createRange();
        range.selectNodeContents(code);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        document.execCommand("copy");
      }
      button.textContent = "Copied";
      button.setAttribute("aria-label", `${label} copied`);
    });
    return h("div", {}, h("label", { text: label }), h("div", { class: "secret" }, code, button));
  }

  function showSecret(title, secret, webhookSecret, after) {
    const body = h("div", {},
      h("p", { class: "notice", text: "This is the only time the secret is shown. Copy it now and store it safely: Raven keeps only a hash." }),
      secretBlock("API key secret", secret),
      webhookSecret ? secretBlock("Webhook signing secret", webhookSecret) : null);
    const done = h("button", { type: "button", class: "primary", text: "I have stored it",
      onclick: () => { closeDialog(); if (after) after(); } });
    openDialog(title, body, [done]);
  }

  // ------------------------------------------------------------------------------ Overview
  async function overview(main) {
    const period = state.me && state.me.budget ? state.me.budget.period : "month";
    const start = windowStart(period);
    const [keyReply, usageReply] = await Promise.all([
      api("GET", "/v1/key"),
      // an admin's usage covers every key unless it names one: the Overview is about this key
      api("GET", "/v1/usage", { query: { start: start.toISOString(), group_by: "model", key_id: isAdmin() ? state.me.id : null } }),
      loadModels(),
    ]);
    const k = keyReply.data.data;
    state.me = k;
    const rows = (usageReply.data && usageReply.data.data) || [];
    const remainingRpm = keyReply.headers.get("x-ratelimit-remaining-requests");
    const credits = k.credits || {};
    const budget = k.budget;
    const spend = rows.reduce((a, r) => a + num(r.cost || 0), 0);
    const requests = rows.reduce((a, r) => a + num(r.requests || 0), 0);
    const tokens = rows.reduce((a, r) => a + num(r.prompt_tokens || 0) + num(r.completion_tokens || 0), 0);
    const creditShare = credits.limit ? num(credits.used) / num(credits.limit) : null;
    const budgetShare = budget && num(budget.amount) ? num(budget.used) / num(budget.amount) : null;

    const quota = h("div", { class: "grid", "aria-label": "Quota" },
      stat("Requests per minute", "rpm", k.rpm ? fmtInt(k.rpm) : "unlimited", k.rpm ? "requests / min" : "",
        remainingRpm !== null && k.rpm ? `${fmtInt(remainingRpm)} left in this minute` : null),
      stat("Concurrency", "concurrency", k.concurrency ? fmtInt(k.concurrency) : "unlimited",
        k.concurrency ? "requests in flight" : ""),
      stat("Tokens per minute", "tpm", k.tpm ? fmtInt(k.tpm) : "unlimited", k.tpm ? "tokens / min" : ""),
      stat("Credits used", "credits", fmtDecimal(credits.used || 0), currency(),
        credits.limit ? `${fmtMoney(credits.remaining)} remaining of ${fmtMoney(credits.limit)}` : "No credit limit",
        creditShare),
      budget
        ? stat(`Budget per ${budget.period}`, "budget", fmtDecimal(budget.used || 0), currency(),
          `${fmtMoney(budget.remaining)} remaining of ${fmtMoney(budget.amount)} · resets ${fmtTime(budget.resets_at)} (${fmtIn(budget.resets_at)})`,
          budgetShare)
        : stat("Budget", "budget", "none", "", "No daily, weekly or monthly budget on this key"),
      stat(`Spend this ${period}`, "spend", fmtDecimal(spend), currency(),
        `${fmtInt(requests)} requests · ${fmtInt(tokens)} tokens since ${fmtTime(start)}`));

    const facts = h("dl", { class: "record" },
      h("dt", { text: "Key" }), h("dd", {}, `${k.name} `, h("code", { text: k.id })),
      h("dt", { text: "Scopes" }), h("dd", {}, h("span", { class: "chips" }, (k.scopes || []).map((s) => h("span", { class: "chip", text: s })))),
      h("dt", { text: "Models" }), h("dd", { text: (k.models || []).length ? k.models.join(", ") : "all models" }),
      h("dt", { text: "Expires" }), h("dd", { "data-field": "expires_at", text: k.expires_at ? `${fmtTime(k.expires_at)} (${fmtIn(k.expires_at)})` : "never" }),
      h("dt", { text: "Tags" }), h("dd", { text: Object.entries(k.metadata || {}).map(([a, b]) => `${a}=${b}`).join(", ") || "none" }));

    const perModel = rows.length
      ? table([
        { label: "Model", key: "model" },
        { label: "Requests", num: true, render: (r) => fmtInt(r.requests) },
        { label: "Tokens", num: true, render: (r) => `${fmtInt(num(r.prompt_tokens) + num(r.completion_tokens))}` },
        { label: `Cost (${currency()})`, num: true, render: (r) => fmtDecimal(r.cost) },
      ], rows, { caption: `This ${period} by model` })
      : empty(`No requests this ${period} yet`, "Call any model with this key (see the API docs at /docs) and its spend shows up here.");

    const refresh = h("button", { type: "button", text: "Refresh", onclick: () => route(false) });
    main.replaceChildren(pagehead("Overview", h("span", { class: "muted", text: `updated ${fmtTime(new Date())}` }), refresh),
      quota, h("div", { class: "card" }, h("h2", { text: "This key" }), facts), perModel);
    state.timer = setInterval(() => { if (document.visibilityState === "visible" && !$("#dialog").open) route(false); }, REFRESH_MS);
  }

  // ------------------------------------------------------------------------------ charts (SVG)
  function chartFrame(title, summary, svg, legend, tableEl) {
    return h("figure", { class: "card chart", "data-chart": title },
      h("h3", { text: title }), svg,
      legend.length ? h("div", { class: "legend", "aria-hidden": "true" }, legend) : null,
      h("details", {}, h("summary", { text: "Show as table" }), tableEl),
      h("figcaption", { class: "muted", text: summary }));
  }

  /** A round axis maximum and its step (at most 5 gridlines of 1, 2 or 5 x 10^k). */
  function niceScale(v) {
    if (!(v > 0)) return { max: 1, steps: 4 };
    const raw = v / 4;
    const p = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
    const steps = Math.max(1, Math.ceil(v / step - 1e-9));
    return { max: step * steps, steps };
  }
  function niceMax(v) { return niceScale(v).max; }
  function gridlines(svg, max, steps, W, H, L, R, T, B, format) {
    for (let g = 0; g <= steps; g++) {
      const y = T + (H - T - B) * (1 - g / steps);
      svg.append(h("svg:line", { x1: L, x2: W - R, y1: y, y2: y, class: "gridline" }),
        h("svg:text", { x: L - 6, y: y + 4, "text-anchor": "end", class: "axis" }, format(max * g / steps)));
    }
  }

  function legendItems(names, colors) {
    return names.map((n, i) => {
      const sw = h("i", { class: "swatch" });
      sw.style.background = (colors || PALETTE)[i % (colors || PALETTE).length];
      return h("span", {}, sw, n);
    });
  }

  /** Stacked bars: one bar per day, one segment per series. */
  function stackedBars(title, days, series, format) {
    const W = 640, H = 240, L = 84, R = 10, T = 12, B = 30;
    const totals = days.map((_, i) => series.reduce((a, s) => a + (s.values[i] || 0), 0));
    const { max, steps } = niceScale(Math.max(0, ...totals));
    const svg = h("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": `${title}: ${format(totals.reduce((a, b) => a + b, 0))} in total over ${days.length} days` });
    gridlines(svg, max, steps, W, H, L, R, T, B, format);
    const slot = (W - L - R) / Math.max(1, days.length);
    const bw = Math.max(2, Math.min(36, slot * 0.7));
    days.forEach((day, i) => {
      let y = H - B;
      const x = L + slot * i + (slot - bw) / 2;
      series.forEach((s, si) => {
        const v = s.values[i] || 0;
        if (v <= 0) return;
        const bh = (H - T - B) * v / max;
        y -= bh;
        svg.append(h("svg:rect", { x: x.toFixed(1), y: y.toFixed(1), width: bw.toFixed(1), height: Math.max(0.5, bh).toFixed(1),
          fill: PALETTE[si % PALETTE.length], "data-day": day, "data-series": s.name, "data-value": v },
        h("svg:title", {}, `${day} · ${s.name}: ${format(v)}`)));
      });
      const every = Math.ceil(days.length / 10);
      if (i % every === 0) svg.append(h("svg:text", { x: (L + slot * i + slot / 2).toFixed(1), y: H - 10, "text-anchor": "middle", class: "axis" }, day.slice(5)));
    });
    const tableEl = table([{ label: "Day", key: "day" }, ...series.map((s) => ({ label: s.name, num: true, render: (r) => format(r[s.name]) }))],
      days.map((day, i) => Object.fromEntries([["day", day], ...series.map((s) => [s.name, s.values[i] || 0])])), { label: `${title} as a table` });
    return chartFrame(title, `${format(totals.reduce((a, b) => a + b, 0))} in total`, svg, legendItems(series.map((s) => s.name)), tableEl);
  }

  /** Lines over days (values may be null where there was no traffic). */
  function lineChart(title, days, series, format) {
    const W = 640, H = 240, L = 84, R = 10, T = 12, B = 30;
    const all = series.flatMap((s) => s.values.filter((v) => v !== null));
    const { max, steps } = niceScale(Math.max(0, ...all));
    const svg = h("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title} per day` });
    gridlines(svg, max, steps, W, H, L, R, T, B, format);
    const slot = (W - L - R) / Math.max(1, days.length);
    const px = (i) => L + slot * i + slot / 2;
    const py = (v) => T + (H - T - B) * (1 - v / max);
    series.forEach((s, si) => {
      const color = PALETTE[si % PALETTE.length];
      let d = "";
      s.values.forEach((v, i) => {
        if (v === null) return;
        d += `${d && s.values[i - 1] !== null ? "L" : "M"}${px(i).toFixed(1)},${py(v).toFixed(1)} `;
        svg.append(h("svg:circle", { cx: px(i).toFixed(1), cy: py(v).toFixed(1), r: 3.5, fill: color, "data-series": s.name, "data-value": v },
          h("svg:title", {}, `${days[i]} · ${s.name}: ${format(v)}`)));
      });
      if (d) svg.prepend(h("svg:path", { d, fill: "none", stroke: color, "stroke-width": 2 }));
    });
    days.forEach((day, i) => {
      if (i % Math.ceil(days.length / 10) === 0) svg.append(h("svg:text", { x: px(i).toFixed(1), y: H - 10, "text-anchor": "middle", class: "axis" }, day.slice(5)));
    });
    const tableEl = table([{ label: "Day", key: "day" }, ...series.map((s) => ({ label: s.name, num: true, render: (r) => (r[s.name] === null ? "—" : format(r[s.name])) }))],
      days.map((day, i) => Object.fromEntries([["day", day], ...series.map((s) => [s.name, s.values[i]])])), { label: `${title} as a table` });
    return chartFrame(title, "p50 and p95 of request latency, p50 of time to first token", svg, legendItems(series.map((s) => s.name)), tableEl);
  }

  /** Horizontal bars: errors and requests per provider. */
  function providerBars(title, rows) {
    const W = 640, rowH = 40, L = 110, R = 90, T = 8;
    const H = T * 2 + rowH * Math.max(1, rows.length);
    const max = niceMax(Math.max(1, ...rows.map((r) => num(r.requests))));
    const svg = h("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": `${title}: ${rows.map((r) => `${r.provider || "none"} ${fmtInt(r.errors)} of ${fmtInt(r.requests)}`).join(", ")}` });
    rows.forEach((r, i) => {
      const y = T + rowH * i;
      const wReq = (W - L - R) * num(r.requests) / max;
      const wErr = (W - L - R) * num(r.errors) / max;
      svg.append(h("svg:text", { x: L - 8, y: y + 20, "text-anchor": "end", class: "axis" }, r.provider || "(none)"),
        h("svg:rect", { x: L, y: y + 6, width: Math.max(0.5, wReq).toFixed(1), height: 24, fill: "#9db4ee" }, h("svg:title", {}, `${r.provider}: ${fmtInt(r.requests)} requests`)),
        h("svg:rect", { x: L, y: y + 6, width: Math.max(0, wErr).toFixed(1), height: 24, fill: "#b3261e", "data-series": "errors", "data-value": num(r.errors) },
          h("svg:title", {}, `${r.provider}: ${fmtInt(r.errors)} errors`)),
        h("svg:text", { x: L + Math.max(wReq, 0) + 6, y: y + 20, class: "axis" }, `${fmtInt(r.errors)} / ${fmtInt(r.requests)}`));
    });
    const legend = legendItems(["requests", "errors"], ["#9db4ee", "#b3261e"]);
    const tableEl = table([{ label: "Provider", render: (r) => r.provider || "(none)" },
      { label: "Requests", num: true, render: (r) => fmtInt(r.requests) },
      { label: "Errors", num: true, render: (r) => fmtInt(r.errors) },
      { label: "Error rate", num: true, render: (r) => (num(r.requests) ? `${(100 * num(r.errors) / num(r.requests)).toFixed(1)} %` : "—") }],
    rows, { label: `${title} as a table` });
    return chartFrame(title, "failed requests out of all requests, per provider", svg, legend, tableEl);
  }

  // ------------------------------------------------------------------------------ Usage
  const usagePeriod = { days: 7, from: "", to: "" };

  function usageRange() {
    if (usagePeriod.from && usagePeriod.to) {
      const start = new Date(`${usagePeriod.from}T00:00:00Z`);
      const end = new Date(`${usagePeriod.to}T00:00:00Z`);
      end.setUTCDate(end.getUTCDate() + 1);
      return { start, end };
    }
    const start = windowStart("day");
    start.setUTCDate(start.getUTCDate() - (usagePeriod.days - 1));
    const end = windowStart("day");
    end.setUTCDate(end.getUTCDate() + 1);
    return { start, end };
  }

  function daysBetween(start, end) {
    const out = [];
    for (const d = new Date(start); d < end && out.length < 400; d.setUTCDate(d.getUTCDate() + 1)) out.push(isoDay(d));
    return out;
  }

  function csvOf(rows) {
    const cols = ["day", "model", "requests", "errors", "prompt_tokens", "completion_tokens", "cost",
      "latency_ms_p50", "latency_ms_p95", "ttft_ms_p50"];
    const cell = (v) => { const s = v === null || v === undefined ? "" : String(v); return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s; };
    return [cols.join(","), ...rows.map((r) => cols.map((c) => cell(c === "day" ? String(r.day || "").slice(0, 10) : r[c])).join(","))].join("\n") + "\n";
  }

  function download(name, text) {
    const url = URL.createObjectURL(new Blob([text], { type: "text/csv;charset=utf-8" }));
    const a = h("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  async function usage(main) {
    const { start, end } = usageRange();
    const q = { start: start.toISOString(), end: end.toISOString() };
    const [byDayModel, byModel, byProvider, byDay] = await Promise.all([
      api("GET", "/v1/usage", { query: { ...q, group_by: "day,model" } }),
      api("GET", "/v1/usage", { query: { ...q, group_by: "model" } }),
      api("GET", "/v1/usage", { query: { ...q, group_by: "provider" } }),
      api("GET", "/v1/usage", { query: { ...q, group_by: "day" } }),
      loadModels(),
    ]);
    const dm = byDayModel.data.data || [];
    const days = daysBetween(start, end);
    const modelsSeen = [...new Set(dm.map((r) => r.model))].sort();
    const series = (field) => modelsSeen.map((m) => ({ name: m, values: days.map((d) => dm
      .filter((r) => r.model === m && String(r.day).slice(0, 10) === d)
      .reduce((a, r) => a + (typeof field === "function" ? field(r) : num(r[field] || 0)), 0)) }));
    const perDay = new Map((byDay.data.data || []).map((r) => [String(r.day).slice(0, 10), r]));
    const lat = (field) => days.map((d) => {
      const v = perDay.has(d) ? perDay.get(d)[field] : null;
      return v === null || v === undefined || !Number.isFinite(num(v)) ? null : num(v);
    });

    const picker = h("div", { class: "segmented", role: "group", "aria-label": "Period" },
      [7, 30, 90].map((n) => h("button", { type: "button", "aria-pressed": String(!usagePeriod.from && usagePeriod.days === n),
        text: `${n} days`, onclick: () => { Object.assign(usagePeriod, { days: n, from: "", to: "" }); route(false); } })));
    const from = h("input", { type: "date", id: "usage-from", value: usagePeriod.from || isoDay(start) });
    const to = h("input", { type: "date", id: "usage-to", value: usagePeriod.to || isoDay(new Date(end.getTime() - 86400000)) });
    const custom = h("form", { class: "filters", "aria-label": "Custom period", onsubmit: (ev) => {
      ev.preventDefault();
      if (from.value && to.value && from.value <= to.value) { Object.assign(usagePeriod, { from: from.value, to: to.value }); route(false); }
    } },
    h("div", {}, h("label", { for: "usage-from", text: "From (UTC)" }), from),
    h("div", {}, h("label", { for: "usage-to", text: "To (UTC)" }), to),
    h("div", {}, h("button", { type: "submit", text: "Apply" })));
    const exportBtn = h("button", { type: "button", text: "Export CSV", disabled: dm.length ? null : true,
      onclick: () => download(`raven-usage-${isoDay(start)}-to-${isoDay(new Date(end.getTime() - 86400000))}.csv`, csvOf(dm)) });

    const scope = h("span", { class: "muted", text: isAdmin() ? "every key (admin view)" : "this key" });
    const head = pagehead("Usage", scope, picker, exportBtn);
    if (!dm.length) {
      main.replaceChildren(head, custom, empty("No usage in this period",
        "Send a request with any key (for example from the API docs at /docs), or pick a longer period."));
      return;
    }
    const tokensSeries = series((r) => num(r.prompt_tokens || 0) + num(r.completion_tokens || 0));
    const charts = h("div", { class: "charts" },
      stackedBars("Requests by model", days, series("requests"), fmtInt),
      stackedBars("Tokens by model", days, tokensSeries, fmtInt),
      stackedBars(`Cost by model (${currency()})`, days, series("cost"), fmtDecimal),
      lineChart("Latency", days, [{ name: "p50", values: lat("latency_ms_p50") }, { name: "p95", values: lat("latency_ms_p95") },
        { name: "TTFT p50", values: lat("ttft_ms_p50") }], fmtMs),
      providerBars("Errors by provider", byProvider.data.data || []));
    const models = table([
      { label: "Model", key: "model" },
      { label: "Requests", num: true, render: (r) => fmtInt(r.requests) },
      { label: "Errors", num: true, render: (r) => fmtInt(r.errors) },
      { label: "Prompt tokens", num: true, render: (r) => fmtInt(r.prompt_tokens) },
      { label: "Completion tokens", num: true, render: (r) => fmtInt(r.completion_tokens) },
      { label: `Cost (${currency()})`, num: true, render: (r) => fmtDecimal(r.cost) },
      { label: "Latency p50", num: true, render: (r) => fmtMs(r.latency_ms_p50) },
      { label: "Latency p95", num: true, render: (r) => fmtMs(r.latency_ms_p95) },
      { label: "TTFT p50", num: true, render: (r) => fmtMs(r.ttft_ms_p50) },
    ], byModel.data.data || [], { caption: `By model, ${isoDay(start)} to ${isoDay(new Date(end.getTime() - 86400000))} (UTC)` });
    main.replaceChildren(head, custom, charts, models);
  }

  // ------------------------------------------------------------------------------ Logs
  const logFilters = { model: "", status: "", since: "", until: "" };

  function recordView(r) {
    const fields = [
      ["Id", r.id], ["Created", fmtTime(r.created_at)], ["Model", r.model], ["Provider", r.provider || "—"],
      ["Upstream model", r.upstream_model || "—"], ["Kind", r.kind || "chat"], ["Status", r.status],
      ["Finish reason", r.finish_reason || "—"], ["Native finish reason", r.native_finish_reason || "—"],
      ["Prompt tokens", fmtInt(r.prompt_tokens)], ["Completion tokens", fmtInt(r.completion_tokens)],
      ["Cost", fmtMoney(r.total_cost)], ["Latency", fmtMs(r.latency_ms)], ["Time to first token", fmtMs(r.ttft_ms)],
      ["Streamed", r.streamed ? "yes" : "no"], ["Usage estimated", r.usage_estimated ? "yes" : "no"],
      ["Attempts", (r.attempts || []).join(", ") || "—"], ["Error", r.error || "—"],
    ];
    for (const [k, v] of Object.entries(r)) {
      if (!["id", "created_at", "model", "provider", "upstream_model", "kind", "status", "finish_reason", "native_finish_reason",
        "prompt_tokens", "completion_tokens", "total_cost", "latency_ms", "ttft_ms", "streamed", "usage_estimated", "attempts", "error"].includes(k)
        && v !== null && typeof v !== "object") fields.push([k, String(v)]);
    }
    return h("dl", { class: "record", "data-record": r.id }, fields.map(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })]));
  }

  function openRecord(r) {
    openDialog(`Generation ${r.id}`, recordView(r), [h("button", { type: "button", class: "primary", text: "Close", onclick: closeDialog })]);
  }

  async function logs(main) {
    await loadModels();
    const modelInput = h("input", { id: "log-model", list: "log-models", value: logFilters.model, placeholder: "any model" });
    const statusSel = h("select", { id: "log-status" }, [["", "any status"], ["completed", "completed"], ["failed", "failed"], ["cancelled", "cancelled"]]
      .map(([v, t]) => h("option", { value: v, selected: logFilters.status === v ? true : null, text: t })));
    const since = h("input", { id: "log-since", type: "datetime-local", value: logFilters.since });
    const until = h("input", { id: "log-until", type: "datetime-local", value: logFilters.until });
    const filters = h("form", { class: "filters card", "aria-label": "Filters", onsubmit: (ev) => {
      ev.preventDefault();
      Object.assign(logFilters, { model: modelInput.value.trim(), status: statusSel.value, since: since.value, until: until.value });
      route(false);
    } },
    h("datalist", { id: "log-models" }, state.models.map((m) => h("option", { value: m.id }))),
    h("div", {}, h("label", { for: "log-model", text: "Model" }), modelInput),
    h("div", {}, h("label", { for: "log-status", text: "Status" }), statusSel),
    h("div", {}, h("label", { for: "log-since", text: "Since (local time)" }), since),
    h("div", {}, h("label", { for: "log-until", text: "Until (local time)" }), until),
    h("div", {}, h("button", { type: "submit", class: "primary", text: "Apply filters" }), " ",
      h("button", { type: "button", text: "Reset", onclick: () => { Object.assign(logFilters, { model: "", status: "", since: "", until: "" }); route(false); } })));

    const idInput = h("input", { id: "log-id", placeholder: "gen-... or chatcmpl-...", spellcheck: "false" });
    const lookupError = h("p", { class: "error", role: "alert" });
    const lookup = h("form", { class: "filters card", "aria-label": "Look up a generation", onsubmit: async (ev) => {
      ev.preventDefault();
      lookupError.textContent = "";
      const id = idInput.value.trim();
      if (!id) { lookupError.textContent = "Enter a generation id (the id of a completion)."; return; }
      try {
        const { data } = await api("GET", "/v1/generation", { query: { id } });
        openRecord(data.data);
      } catch (err) {
        lookupError.textContent = err.status === 404 ? `No generation ${id} for this key.` : err.message;
      }
    } },
    h("div", {}, h("label", { for: "log-id", text: "Generation id" }), idInput),
    h("div", {}, h("button", { type: "submit", text: "Look up" })), lookupError);

    const toIso = (v) => (v ? new Date(v).toISOString() : "");
    const query = { limit: PAGE_SIZE, model: logFilters.model, status: logFilters.status, since: toIso(logFilters.since), until: toIso(logFilters.until) };
    const { data } = await api("GET", "/v1/generations", { query });
    const rows = data.data || [];
    const columns = [
      { label: "Time (UTC)", render: (r) => { const d = toDate(r.created_at); return d ? d.toISOString().slice(0, 19).replace("T", " ") : "—"; } },
      { label: "Id", render: (r) => h("button", { type: "button", class: "small mono", "data-id": r.id, title: r.id,
        text: r.id.length > 18 ? `${r.id.slice(0, 17)}…` : r.id, "aria-label": `Open generation ${r.id}`, onclick: () => openRecord(r) }) },
      { label: "Model", key: "model" },
      { label: "Provider", render: (r) => r.provider || "—" },
      { label: "Status", render: (r) => h("span", { class: `status-${r.status}`, text: r.status }) },
      { label: "Tokens in / out", num: true, render: (r) => `${fmtInt(r.prompt_tokens)} / ${fmtInt(r.completion_tokens)}` },
      { label: `Cost (${currency()})`, num: true, render: (r) => fmtDecimal(r.total_cost) },
      { label: "Latency", num: true, render: (r) => fmtMs(r.latency_ms) },
      { label: "TTFT", num: true, render: (r) => (num(r.ttft_ms) ? fmtMs(r.ttft_ms) : "—") },
    ];
    const list = h("div", { id: "log-list" });
    const more = h("button", { type: "button", text: "Load more" });
    let next = data.has_more ? data.next : null;
    const render = (all) => list.replaceChildren(all.length ? table(columns, all, { onRow: openRecord, caption: "Generations, newest first" })
      : empty("No generations match", "Make a request with this key, or clear the filters."));
    const all = [...rows];
    render(all);
    more.hidden = !next;
    more.addEventListener("click", async () => {
      more.disabled = true;
      const page = await api("GET", "/v1/generations", { query: { ...query, after: next } });
      all.push(...(page.data.data || []));
      next = page.data.has_more ? page.data.next : null;
      render(all);
      more.disabled = false;
      more.hidden = !next;
    });
    main.replaceChildren(pagehead("Logs"), filters, lookup, list, more);
  }

  // ------------------------------------------------------------------------------ API Keys
  function keyForm(k) {
    const v = k || {};
    const field = (id, label, input, hint) => h("div", {}, h("label", { for: id, text: label }), input, hint ? h("p", { class: "hint", id: `${id}-hint`, text: hint }) : null);
    const input = (id, attrs) => h("input", { id, name: id, ...attrs });
    const budget = v.budget || {};
    const creditLimit = v.credits && typeof v.credits === "object" ? v.credits.limit : v.credits;
    return h("div", { class: "formgrid" },
      field("f-name", "Name", input("f-name", { required: true, maxlength: 200, value: v.name || "" })),
      field("f-rpm", "Requests per minute", input("f-rpm", { type: "number", min: 0, step: 1, value: v.rpm ?? "" }), "0 or empty = unlimited"),
      field("f-concurrency", "Concurrency", input("f-concurrency", { type: "number", min: 0, step: 1, value: v.concurrency ?? "" }), "requests in flight; 0 = unlimited"),
      field("f-tpm", "Tokens per minute", input("f-tpm", { type: "number", min: 0, step: 1, value: v.tpm ?? "" }), "0 or empty = unlimited"),
      field("f-credits", `Credits (${currency()})`, input("f-credits", { inputmode: "decimal", value: creditLimit ?? "" }), "lifetime limit; empty = unlimited"),
      field("f-budget", `Budget (${currency()})`, input("f-budget", { inputmode: "decimal", value: budget.amount ?? "" }), "per period; empty = none"),
      field("f-period", "Budget period", h("select", { id: "f-period" }, ["day", "week", "month"].map((p) => h("option", { value: p, selected: (budget.period || "month") === p ? true : null, text: p })))),
      field("f-models", "Allowed models", input("f-models", { value: (v.models || []).join(", "), placeholder: "raven/*, gpt-4o" }), "comma separated, * wildcard; empty = all"),
      field("f-expires", "Expires (UTC date)", input("f-expires", { type: "date", value: v.expires_at ? String(v.expires_at).slice(0, 10) : "" }), "empty = never"),
      h("fieldset", { class: "chips-field" }, h("legend", { text: "Scopes" }),
        h("label", { class: "check" }, h("input", { type: "checkbox", id: "f-inference", checked: !k || (v.scopes || []).includes("inference") ? true : null }), "inference (call models)"),
        h("label", { class: "check" }, h("input", { type: "checkbox", id: "f-admin", checked: (v.scopes || []).includes("admin") ? true : null }), "admin (manage keys, see all usage)")));
  }

  function readKeyForm() {
    const val = (id) => $(`#${id}`).value.trim();
    const int = (id) => { const s = val(id); if (!s) return 0; const n = Number(s); if (!Number.isInteger(n) || n < 0) throw new Error(`${id.slice(2)} must be a whole number ≥ 0`); return n; };
    const dec = (id, what) => { const s = val(id); if (s && !/^\d+(\.\d+)?$/.test(s)) throw new Error(`${what} must be a decimal amount like 5 or 0.25`); return s; };
    if (!val("f-name")) throw new Error("Give the key a name.");
    const scopes = [$("#f-inference").checked ? "inference" : null, $("#f-admin").checked ? "admin" : null].filter(Boolean);
    if (!scopes.length) throw new Error("Choose at least one scope.");
    const credits = dec("f-credits", "Credits");
    const budget = dec("f-budget", "Budget");
    const expires = val("f-expires");
    return {
      name: val("f-name"), rpm: int("f-rpm"), concurrency: int("f-concurrency"), tpm: int("f-tpm"),
      credits: credits || null, budget: budget ? { amount: budget, period: $("#f-period").value } : null,
      models: val("f-models") ? val("f-models").split(",").map((s) => s.trim()).filter(Boolean) : [],
      expires_at: expires ? `${expires}T00:00:00Z` : null, scopes,
    };
  }

  function submitting(button, fn) {
    return async () => {
      dialogError("");
      button.disabled = true;
      try { await fn(); } catch (err) { dialogError(err.message); } finally { button.disabled = false; }
    };
  }

  function createKey(reload) {
    const save = h("button", { type: "button", class: "primary", text: "Create key" });
    save.addEventListener("click", submitting(save, async () => {
      const body = readKeyForm();
      for (const f of ["credits", "budget", "expires_at"]) if (body[f] === null) delete body[f];
      const { data } = await api("POST", "/v1/keys", { body });
      showSecret(`Key “${data.key.name}” created`, data.secret, data.key.alert_webhook ? data.webhook_secret : null, reload);
    }));
    openDialog("Create an API key", keyForm(null), [h("button", { type: "button", text: "Cancel", onclick: closeDialog }), save]);
  }

  function editKey(k, reload) {
    const save = h("button", { type: "button", class: "primary", text: "Save changes" });
    save.addEventListener("click", submitting(save, async () => {
      await api("PATCH", `/v1/keys/${encodeURIComponent(k.id)}`, { body: readKeyForm() });
      closeDialog();
      reload();
    }));
    openDialog(`Edit “${k.name}”`, keyForm(k), [h("button", { type: "button", text: "Cancel", onclick: closeDialog }), save]);
  }

  function rotateKey(k, reload) {
    const grace = h("select", { id: "f-grace" }, [[0, "immediately"], [3600, "after 1 hour"], [86400, "after 24 hours"], [604800, "after 7 days"]]
      .map(([s, t]) => h("option", { value: s, selected: s === 86400 ? true : null, text: t })));
    const go = h("button", { type: "button", class: "primary", text: "Rotate" });
    go.addEventListener("click", submitting(go, async () => {
      const { data } = await api("POST", `/v1/keys/${encodeURIComponent(k.id)}/rotate`, { body: { grace_seconds: Number(grace.value) } });
      showSecret(`New secret for “${k.name}”`, data.secret, null, reload);
    }));
    openDialog(`Rotate “${k.name}”`, h("div", {}, h("p", { text: "Rotation issues a new secret. The old secret keeps working for the grace period, then stops." }),
      h("label", { for: "f-grace", text: "Old secret stops working" }), grace),
    [h("button", { type: "button", text: "Cancel", onclick: closeDialog }), go]);
  }

  function revokeKey(k, reload) {
    const go = h("button", { type: "button", class: "primary danger", text: "Revoke key" });
    go.addEventListener("click", submitting(go, async () => {
      await api("DELETE", `/v1/keys/${encodeURIComponent(k.id)}`);
      closeDialog();
      reload();
    }));
    openDialog(`Revoke “${k.name}”?`, h("p", { text: `Requests with ${k.id} will get 401 from now on. This cannot be undone.` }),
      [h("button", { type: "button", text: "Cancel", onclick: closeDialog }), go]);
  }

  function creditsOf(k) {
    const limit = k.credits && typeof k.credits === "object" ? k.credits.limit : k.credits;
    const used = k.credits && typeof k.credits === "object" ? k.credits.used : k.credits_used;
    return limit ? `${fmtDecimal(used || 0)} of ${fmtDecimal(limit)}` : `${fmtDecimal(used || 0)} (no limit)`;
  }

  const keysView = { showRevoked: false };

  async function keys(main) {
    await loadModels();
    if (!isAdmin()) {
      const { data } = await api("GET", "/v1/key");
      const k = data.data;
      main.replaceChildren(pagehead("API Keys"),
        h("p", { class: "notice", text: "This key has no admin scope, so it sees only itself. An administrator creates, changes, rotates and revokes keys." }),
        table([{ label: "Name", key: "name" }, { label: "Id", render: (r) => h("code", { text: r.id }) },
          { label: "Scopes", render: (r) => (r.scopes || []).join(", ") },
          { label: "RPM", num: true, render: (r) => limitText(r.rpm, "") },
          { label: "Concurrency", num: true, render: (r) => limitText(r.concurrency, "") },
          { label: "TPM", num: true, render: (r) => limitText(r.tpm, "") },
          { label: `Credits (${currency()})`, num: true, render: creditsOf },
          { label: "Expires", render: (r) => (r.expires_at ? fmtTime(r.expires_at) : "never") }], [k], { caption: "Your key" }));
      return;
    }
    const reload = () => route(false);
    const listQuery = { limit: 50, include_revoked: keysView.showRevoked ? "true" : null };
    const { data } = await api("GET", "/v1/keys", { query: listQuery });
    const all = [...(data.data || [])];
    let next = data.has_more ? data.next : null;
    const columns = [
      { label: "Key", render: (r) => h("div", { "data-key-id": r.id }, h("strong", { text: r.name }), " ",
        r.revoked ? h("span", { class: "badge-revoked", text: "revoked" }) : null, h("br"), h("code", { class: "muted", text: r.id }), h("br"),
        h("span", { class: "muted", text: (r.scopes || []).join(", ") }), h("br"),
        h("span", { class: "muted", text: r.expires_at ? `expires ${fmtTime(r.expires_at)}` : "never expires" })) },
      { label: "Actions", render: (r) => (r.revoked ? "—" : h("div", { class: "rowactions" },
        h("button", { type: "button", class: "small", text: "Edit", "aria-label": `Edit ${r.name}`, onclick: () => editKey(r, reload) }),
        h("button", { type: "button", class: "small", text: "Rotate", "aria-label": `Rotate ${r.name}`, onclick: () => rotateKey(r, reload) }),
        h("button", { type: "button", class: "small danger", text: "Revoke", "aria-label": `Revoke ${r.name}`, onclick: () => revokeKey(r, reload) }))) },
      { label: "Limits", render: (r) => h("div", {}, `${limitText(r.rpm, "req/min")} · ${limitText(r.concurrency, "in flight")}`, h("br"), limitText(r.tpm, "tokens/min")) },
      { label: `Credits used (${currency()})`, num: true, render: creditsOf },
      { label: "Budget", render: (r) => (r.budget ? `${fmtMoney(r.budget.amount)} / ${r.budget.period}` : "—") },
      { label: "Models", render: (r) => ((r.models || []).length ? r.models.join(", ") : "all") },
    ];
    const list = h("div", { id: "key-list" });
    const more = h("button", { type: "button", text: "Load more", hidden: next ? null : true });
    const render = () => list.replaceChildren(all.length ? table(columns, all, { caption: "Keys" })
      : empty("No keys yet", "Create one with “Create key”."));
    render();
    more.addEventListener("click", async () => {
      const page = await api("GET", "/v1/keys", { query: { ...listQuery, after: next } });
      all.push(...(page.data.data || []));
      next = page.data.has_more ? page.data.next : null;
      more.hidden = !next;
      render();
    });
    const revoked = h("label", { class: "check" }, h("input", { type: "checkbox", id: "show-revoked", checked: keysView.showRevoked ? true : null,
      onchange: (ev) => { keysView.showRevoked = ev.target.checked; reload(); } }), "Show revoked keys");
    main.replaceChildren(pagehead("API Keys", revoked, h("button", { type: "button", class: "primary", text: "Create key", onclick: () => createKey(reload) })), list, more);
  }

  // ------------------------------------------------------------------------------ Models
  async function models(main) {
    state.models = null;
    const rows = await loadModels();
    const per = (v, unit) => (v === undefined || v === null || v === "" ? "—" : `${fmtDecimal(v)} ${currency()} / ${unit}`);
    main.replaceChildren(pagehead("Models", h("span", { class: "muted", text: `${rows.length} models · prices in ${currency()}` })),
      rows.length ? table([
        { label: "Model", render: (m) => h("code", { text: m.id }) },
        { label: "Capabilities", render: (m) => h("span", { class: "chips" }, (m.capabilities || []).map((c) => h("span", { class: "chip", text: c }))) },
        { label: "Context length", num: true, render: (m) => `${fmtInt(m.context_length)} tokens` },
        { label: "Input price", num: true, render: (m) => per(m.pricing && m.pricing.prompt, "1M tokens") },
        { label: "Output price", num: true, render: (m) => per(m.pricing && m.pricing.completion, "1M tokens") },
        { label: "Image / video", num: true, render: (m) => [m.pricing && m.pricing.image && num(m.pricing.image) ? per(m.pricing.image, "image") : null,
          m.pricing && m.pricing.video_second && num(m.pricing.video_second) ? per(m.pricing.video_second, "video second") : null].filter(Boolean).join(" · ") || "—" },
      ], rows, { caption: "Catalogue visible to this key" })
        : empty("No models visible to this key", "The key's model allow-list hides every model, or the catalogue is empty: ask an administrator."));
  }

  // ------------------------------------------------------------------------------ start
  document.addEventListener("DOMContentLoaded", async () => {
    $("#signin-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const key = $("#signin-key").value.trim();
      const err = $("#signin-error");
      err.textContent = "";
      if (!key) { err.textContent = "Paste an API key."; return; }
      const button = ev.target.querySelector("button");
      button.disabled = true;
      try {
        await signIn(key);
        if (!window.location.hash.startsWith("#/")) window.location.hash = "#/overview";
        else await route(true);
      } catch (e) {
        state.key = null;
        err.textContent = e.status === 401 ? "This key is not valid (wrong, revoked or expired)." : e.message;
      } finally {
        button.disabled = false;
      }
    });
    $("#signout").addEventListener("click", () => signOut("Signed out. The key was removed from this tab."));
    $("#dialog").addEventListener("close", () => { clearDialog(); if (state.lastFocus && state.lastFocus.isConnected) state.lastFocus.focus(); });
    $("#dialog-form").addEventListener("submit", (ev) => ev.preventDefault());
    window.addEventListener("hashchange", () => route(true));
    const saved = sessionStorage.getItem(STORAGE_KEY);
    if (!saved) { showSignIn(""); return; }
    try {
      await signIn(saved);
      await route(false);
    } catch (e) {
      signOut(e.status === 401 ? "Your key was rejected (revoked or expired). Sign in again." : e.message);
    }
  });
})();
