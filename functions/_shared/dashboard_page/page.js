// @ts-check
/// <reference lib="dom" />
/**
 * The dashboard page's script (a classic browser script, inlined into the page by
 * scripts/dashboard_page.mjs): reads `<api>/data` and `<api>/deliveries/<id>` with the user's token
 * and draws inline SVG charts. `<api>` is `<meta name="dashboard-api">` when set (the page served by
 * `email-status dashboard --url`), else the page's own path. Type-checked by `deno check` (JSDoc).
 */
"use strict";

/**
 * @typedef {{ p50: number | null, p95: number | null, p99: number | null }} Latency
 * @typedef {{ workflow: string, completed: number, by_status: Record<string, number>,
 *   success_rate: number | null, latency_ms: Latency }} WorkflowMetrics
 * @typedef {{ total: number, by_status: Record<string, number>, success_rate: number | null,
 *   latency_ms: Latency }} Totals
 * @typedef {{ workflow: string, error_code: string, deliveries: number }} ErrorCount
 * @typedef {{ size: number, workflows: { workflow: string, size: number, oldest_age_seconds: number }[] }} DeadLetters
 * @typedef {{ outcomes: number, sent: number, retrying: number, failed: number, dead_letter: number,
 *   deferral_rate: number, domain?: string, relay?: string }} Outcomes
 * @typedef {{ totals: Totals, workflows: WorkflowMetrics[], errors: ErrorCount[], dead_letter_queue: DeadLetters,
 *   domains?: Outcomes[], relays?: Outcomes[] }} Metrics
 * @typedef {{ delivery_id: string, workflow: string, recipient: string, status: string, attempts: number,
 *   last_error_code: string | null, last_error_message: string | null, updated_at: string }} Failure
 * @typedef {{ window: { name: string, since: string, until: string, bucket_seconds: number },
 *   metrics: Metrics, series: { t: string, status: string, n: number }[], recent_failures: Failure[],
 *   workflows: string[], statuses: string[] }} DashboardData
 * @typedef {{ from_status: string | null, to_status: string, attempt: number, error_code: string | null,
 *   error_message: string | null, actor: string, created_at: string }} TimelineEvent
 * @typedef {{ workflow: string, recipient: string, status: string, attempts: number, max_attempts: number,
 *   events: TimelineEvent[] }} DeliveryDoc
 * @typedef {{ label: string, value: number, text: string, color?: string,
 *   testid?: Record<string, string> }} Bar
 */

(() => {
  /** Every status of email.statuses has its colour (a missing one fails `deno check`). @type {Record<import("../statuses.gen.ts").Status, string>} */
  const COLORS = {
    queued: "#8590a2",
    in_progress: "#1d7afc",
    retrying: "#e2b203",
    sent: "#22a06b",
    failed: "#e34935",
    dead_letter: "#943d73",
    suppressed: "#6e5dc6",
    purged: "#44546f",
  };
  /** The statuses of email.statuses in display order, as the data route sends them (see render). */
  let ORDER = /** @type {string[]} */ ([]);
  const KEY = "email-worker-dashboard-token";
  const SVG = "http://www.w3.org/2000/svg";
  const apiBase = document.querySelector('meta[name="dashboard-api"]')?.getAttribute("content");
  const base = (apiBase || location.pathname).replace(/\/+$/, "");

  /** @param {string} id */
  function $(id) {
    const n = document.getElementById(id);
    if (!n) throw new Error(`#${id} is missing from the page`);
    return n;
  }
  /** @param {string} id */
  const select = (id) => /** @type {HTMLSelectElement} */ ($(id));

  /**
   * An element (`svg:` prefix: an SVG one) with attributes and children.
   * @param {string} tag
   * @param {Record<string, string | number>} [attrs]
   * @param {(Node | string)[]} [children]
   * @returns {Element}
   */
  function el(tag, attrs = {}, children = []) {
    const n = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    for (const c of children) n.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    return n;
  }
  /** @param {Element} n */
  function clear(n) {
    while (n.firstChild) n.removeChild(n.firstChild);
    return n;
  }
  /** @param {string} s */
  const color = (s) => /** @type {Record<string, string>} */ (COLORS)[s] || "#8590a2";
  /** @param {number | null | undefined} v */
  const pct = (v) => v === null || v === undefined ? "-" : (Number(v) * 100).toFixed(1) + "%";
  /** @param {number | null | undefined} v */
  function ms(v) {
    if (v === null || v === undefined) return "-";
    const n = Number(v);
    return n >= 1000 ? (n / 1000).toFixed(2) + " s" : Math.round(n) + " ms";
  }
  /** @param {number | null | undefined} v seconds */
  function ago(v) {
    if (v === null || v === undefined) return "-";
    const s = Number(v);
    if (s < 120) return Math.round(s) + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  }
  /**
   * @param {string | number} when an ISO time or epoch milliseconds
   * @param {boolean} [withDate]
   */
  function time(when, withDate) {
    const d = new Date(when);
    const hm = String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
    return withDate ? d.toISOString().slice(5, 10) + " " + hm : hm;
  }

  // --- state: the fragment carries token (taken out at once), workflow and window ---
  const state = { since: "24h", workflow: "" };
  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get("token");
    if (token) sessionStorage.setItem(KEY, token);
    state.since = params.get("since") || "24h";
    state.workflow = params.get("workflow") || "";
  }
  readHash();
  function saveHash() {
    const p = new URLSearchParams();
    if (state.workflow) p.set("workflow", state.workflow);
    if (state.since !== "24h") p.set("since", state.since);
    history.replaceState(null, "", location.pathname + location.search + (p.toString() ? "#" + p : ""));
  }
  saveHash();
  // Served away from the function (email-status dashboard --url): say which project it reads.
  if (apiBase) $("api-host").textContent = "· " + new URL(apiBase).host;

  /** An API error with its HTTP status. */
  class ApiError extends Error {
    /**
     * @param {string} message
     * @param {number} status
     */
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  /**
   * @param {string} path
   * @returns {Promise<any>}
   */
  async function api(path) {
    const res = await fetch(base + path, {
      headers: { authorization: "Bearer " + (sessionStorage.getItem(KEY) || "") },
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new ApiError(body?.error?.message || "HTTP " + res.status, res.status);
    return body;
  }

  /** @param {string} message */
  function showSignin(message) {
    $("main").hidden = true;
    $("controls").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
  }

  async function load() {
    if (!sessionStorage.getItem(KEY)) return showSignin("");
    $("loaded").hidden = true;
    const q = "?since=" + encodeURIComponent(state.since) +
      (state.workflow ? "&workflow=" + encodeURIComponent(state.workflow) : "");
    try {
      /** @type {DashboardData} */
      const data = await api("/data" + q);
      $("signin").hidden = true;
      $("main").hidden = false;
      $("controls").hidden = false;
      render(data);
      $("loaded").hidden = false;
      $("loaded").setAttribute("data-loaded-at", String(Date.now()));
    } catch (e) {
      const status = e instanceof ApiError ? e.status : 0;
      const message = e instanceof Error ? e.message : String(e);
      if (status === 401 || status === 403) {
        sessionStorage.removeItem(KEY);
        showSignin(message);
      } else {
        $("signin-error").textContent = message;
      }
    }
  }

  // --- charts ---
  /** @param {DashboardData} data */
  function render(data) {
    const m = data.metrics, t = m.totals;
    ORDER = data.statuses;
    select("since").value = data.window.name;
    const wf = select("workflow");
    clear(wf).appendChild(el("option", { value: "" }, ["all"]));
    for (const w of new Set(data.workflows.concat(state.workflow ? [state.workflow] : []))) {
      wf.appendChild(el("option", { value: w }, [w]));
    }
    wf.value = state.workflow;
    $("card-total").textContent = String(t.total);
    $("card-sent").textContent = String(t.by_status.sent || 0);
    $("card-success").textContent = pct(t.success_rate);
    $("card-p95").textContent = ms(t.latency_ms.p95);
    $("dlq-size").textContent = String(m.dead_letter_queue.size);
    series(data);
    success(m);
    latency(m);
    errors(m);
    dlq(m);
    deferrals(m.domains || [], "domain");
    deferrals(m.relays || [], "relay");
    failures(data.recent_failures);
  }

  /**
   * Statuses in display order, then any the page does not know.
   * @param {Record<string, number>} counts
   */
  const ordered = (counts) => ORDER.concat(Object.keys(counts).filter((s) => !ORDER.includes(s)));

  /** @param {DashboardData} data */
  function series(data) {
    const W = 1100, H = 240, L = 40, B = 24, T = 10;
    const step = data.window.bucket_seconds * 1000;
    // the buckets start at multiples of the width (UTC-aligned), the first one at or before since
    const since = Math.floor(Date.parse(data.window.since) / step) * step, until = Date.parse(data.window.until);
    const n = Math.max(1, Math.ceil((until - since) / step));
    /** @type {Record<string, number>[]} */
    const buckets = Array.from({ length: n }, () => ({}));
    /** @type {Record<string, number>} */
    const totals = {};
    for (const r of data.series) {
      const k = Math.min(n - 1, Math.max(0, Math.floor((Date.parse(r.t) - since) / step)));
      buckets[k][r.status] = (buckets[k][r.status] || 0) + r.n;
      totals[r.status] = (totals[r.status] || 0) + r.n;
    }
    let max = 1;
    for (const b of buckets) max = Math.max(max, Object.values(b).reduce((a, c) => a + c, 0));
    const lines = Math.min(4, max);
    max = Math.ceil(max / lines) * lines;
    const svg = el("svg:svg", {
      viewBox: `0 0 ${W} ${H}`,
      width: "100%",
      role: "img",
      "aria-label": "deliveries over time by status",
    });
    const bw = (W - L - 8) / n;
    for (let g = 0; g <= lines; g++) {
      const y = T + (H - T - B) * (1 - g / lines);
      svg.appendChild(el("svg:line", { x1: L, x2: W - 4, y1: y, y2: y, stroke: "#eef0f2" }));
      svg.appendChild(el("svg:text", { x: L - 6, y: y + 4, "text-anchor": "end" }, [String(max * g / lines)]));
    }
    buckets.forEach((b, i) => {
      const x = L + i * bw;
      let y = H - B;
      for (const s of ordered(b)) {
        if (!b[s]) continue;
        const h = (H - T - B) * b[s] / max;
        y -= h;
        svg.appendChild(el("svg:rect", {
          x: x + 1,
          y,
          width: Math.max(1, bw - 2),
          height: h,
          fill: color(s),
          "data-status": s,
          "data-count": b[s],
        }, [el("svg:title", {}, [`${s}: ${b[s]} at ${time(since + i * step, true)}`])]));
      }
      if (i % Math.ceil(n / 8) === 0) {
        svg.appendChild(
          el("svg:text", { x: x + bw / 2, y: H - 6, "text-anchor": "middle" }, [
            time(since + i * step, n * step > 86400000),
          ]),
        );
      }
    });
    clear($("chart-series")).appendChild(svg);
    const legend = clear($("legend-series"));
    for (const s of ordered(totals)) {
      if (!totals[s]) continue;
      legend.appendChild(
        el("span", { "data-testid": "series-total", "data-status": s }, [
          el("i", { style: "background:" + color(s) }),
          `${s} ${totals[s]}`,
        ]),
      );
    }
    if (!Object.keys(totals).length) {
      legend.appendChild(el("span", { class: "empty" }, ["no deliveries in this window"]));
    }
  }

  /**
   * Horizontal bars with a label on the left and a value on the right.
   * @param {Element} target
   * @param {Bar[]} rows
   * @param {{ label: string, empty: string, max?: number, labelWidth?: number }} opts
   */
  function hbars(target, rows, opts) {
    const W = 520, row = 26, L = opts.labelWidth || 150, R = 110;
    const svg = el("svg:svg", {
      viewBox: `0 0 ${W} ${Math.max(row, rows.length * row + 4)}`,
      width: "100%",
      role: "img",
      "aria-label": opts.label,
    });
    const max = opts.max || Math.max(1, ...rows.map((r) => r.value || 0));
    rows.forEach((r, i) => {
      const y = i * row + 2, w = (W - L - R) * (r.value || 0) / max;
      svg.appendChild(el("svg:text", { x: L - 8, y: y + 16, "text-anchor": "end" }, [r.label]));
      svg.appendChild(el("svg:rect", { x: L, y: y + 4, width: W - L - R, height: row - 10, fill: "#f1f2f4", rx: 3 }));
      svg.appendChild(
        el("svg:rect", { x: L, y: y + 4, width: Math.max(0, w), height: row - 10, fill: r.color || "#1d7afc", rx: 3 }, [
          el("svg:title", {}, [`${r.label}: ${r.text}`]),
        ]),
      );
      svg.appendChild(el("svg:text", { x: W - R + 6, y: y + 16, class: "val", ...r.testid }, [r.text]));
    });
    clear(target).appendChild(rows.length ? svg : el("div", { class: "empty" }, [opts.empty]));
  }

  /** @param {Metrics} m */
  function success(m) {
    const rows = m.workflows.filter((w) => w.completed > 0).map((w) => {
      const rate = Number(w.success_rate);
      return {
        label: w.workflow,
        value: rate,
        color: rate >= 0.95 ? "#22a06b" : rate >= 0.8 ? "#e2b203" : "#e34935",
        text: `${pct(w.success_rate)} (${w.by_status.sent || 0}/${w.completed})`,
        testid: { "data-testid": "success-rate", "data-workflow": w.workflow },
      };
    });
    hbars($("chart-success"), rows, {
      max: 1,
      label: "success rate by workflow",
      empty: "nothing completed in this window",
    });
  }

  /** @param {Metrics} m */
  function latency(m) {
    /** @type {Bar[]} */
    const rows = [];
    /** @type {Record<string, string>} */
    const tint = { p50: "#579dff", p95: "#1d7afc", p99: "#0c66e4" };
    /** @type {{ workflow: string, latency_ms: Latency }[]} */
    let flows = m.workflows.filter((w) => w.latency_ms.p50 !== null);
    if (flows.length > 1) flows = [{ workflow: "(all)", latency_ms: m.totals.latency_ms }].concat(flows);
    for (const w of flows) {
      for (const p of /** @type {const} */ (["p50", "p95", "p99"])) {
        rows.push({
          label: `${w.workflow} ${p}`,
          value: Number(w.latency_ms[p]),
          color: tint[p],
          text: ms(w.latency_ms[p]),
          testid: { "data-testid": "latency", "data-workflow": w.workflow, "data-percentile": p },
        });
      }
    }
    hbars($("chart-latency"), rows, {
      label: "latency percentiles",
      empty: "nothing sent in this window",
      labelWidth: 190,
    });
  }

  /** @param {Metrics} m */
  function errors(m) {
    /** @type {Record<string, number>} */
    const byCode = {};
    for (const e of m.errors) byCode[e.error_code] = (byCode[e.error_code] || 0) + Number(e.deliveries);
    const rows = Object.keys(byCode).sort((a, b) => byCode[b] - byCode[a] || (a < b ? -1 : 1)).slice(0, 12)
      .map((c) => ({
        label: c,
        value: byCode[c],
        color: "#e34935",
        text: String(byCode[c]),
        testid: { "data-testid": "error-code", "data-code": c },
      }));
    hbars($("chart-errors"), rows, { label: "error codes", empty: "no errors in this window", labelWidth: 190 });
  }

  /** @param {Metrics} m */
  function dlq(m) {
    const rows = m.dead_letter_queue.workflows.map((w) => ({
      label: w.workflow,
      value: Number(w.size),
      color: "#943d73",
      text: `${w.size} (oldest ${ago(w.oldest_age_seconds)})`,
      testid: { "data-testid": "dlq-workflow", "data-workflow": w.workflow },
    }));
    hbars($("chart-dlq"), rows, { label: "dead letters by workflow", empty: "the dead-letter queue is empty" });
  }

  /**
   * Attempt outcomes in the window per recipient domain or SMTP relay: the share deferred (retrying),
   * so a provider that starts deferring stands out.
   * @param {Outcomes[]} list
   * @param {"domain" | "relay"} kind
   */
  function deferrals(list, kind) {
    const rows = list.slice(0, 12).map((o) => {
      const rate = Number(o.deferral_rate), name = String(o[kind]);
      return {
        label: name,
        value: rate,
        color: rate < 0.05 ? "#22a06b" : rate < 0.2 ? "#e2b203" : "#e34935",
        text: `${pct(rate)} (${o.retrying}/${o.outcomes})`,
        testid: { "data-testid": `${kind}-deferral`, [`data-${kind}`]: name },
      };
    });
    hbars($(`chart-${kind}s`), rows, {
      max: 1,
      label: `deferrals by ${kind}`,
      empty: "no attempts in this window",
      labelWidth: 190,
    });
  }

  /** @param {Failure[]} list */
  function failures(list) {
    const body = clear($("failures"));
    $("failures-empty").hidden = list.length > 0;
    for (const f of list) {
      const error = (f.last_error_code || "") + (f.last_error_message ? " · " + f.last_error_message : "");
      const tr = el("tr", { "data-testid": "failure-row", "data-delivery-id": f.delivery_id, tabindex: "0" }, [
        el("td", {}, [time(f.updated_at, true)]),
        el("td", {}, [f.delivery_id]),
        el("td", {}, [f.workflow]),
        el("td", {}, [f.recipient]),
        el("td", {}, [el("span", { class: "badge", style: "background:" + color(f.status) }, [f.status])]),
        el("td", {}, [String(f.attempts)]),
        el("td", { class: "msg" }, [error]),
      ]);
      tr.addEventListener("click", () => openTimeline(f.delivery_id));
      tr.addEventListener("keydown", (e) => {
        if (/** @type {KeyboardEvent} */ (e).key === "Enter") openTimeline(f.delivery_id);
      });
      body.appendChild(tr);
    }
  }

  /** @param {string} id */
  async function openTimeline(id) {
    $("timeline").hidden = false;
    $("timeline-title").textContent = id;
    const events = clear($("timeline-events"));
    $("timeline-summary").textContent = "loading…";
    try {
      /** @type {DeliveryDoc} */
      const d = await api("/deliveries/" + encodeURIComponent(id));
      $("timeline-summary").textContent =
        `${d.workflow} · ${d.recipient} · ${d.status} · attempts ${d.attempts}/${d.max_attempts}`;
      for (const e of d.events) {
        const what = (e.from_status ? e.from_status + " → " : "") + e.to_status;
        const when = new Date(e.created_at).toISOString().replace("T", " ").slice(0, 19) + " UTC · " + e.actor;
        events.appendChild(
          el(
            "li",
            { "data-testid": "timeline-event", "data-status": e.to_status, style: "--c:" + color(e.to_status) },
            [
              el("div", {}, [el("strong", {}, [what]), ` #${e.attempt}` + (e.error_code ? " · " + e.error_code : "")]),
              el("div", { class: "meta" }, [when]),
              e.error_message ? el("div", { class: "meta" }, [e.error_message]) : el("span"),
            ],
          ),
        );
      }
    } catch (e) {
      $("timeline-summary").textContent = e instanceof Error ? e.message : String(e);
    }
  }

  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = /** @type {HTMLInputElement} */ ($("token-input"));
    sessionStorage.setItem(KEY, input.value.trim());
    input.value = "";
    load();
  });
  select("since").addEventListener("change", () => {
    state.since = select("since").value;
    saveHash();
    load();
  });
  select("workflow").addEventListener("change", () => {
    state.workflow = select("workflow").value;
    saveHash();
    load();
  });
  $("refresh").addEventListener("click", load);
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showSignin("");
  });
  $("timeline-close").addEventListener("click", () => {
    $("timeline").hidden = true;
  });
  globalThis.addEventListener("hashchange", () => {
    if (!location.hash) return;
    readHash();
    saveHash();
    load();
  });
  setInterval(() => {
    if (!$("main").hidden && !document.hidden) load();
  }, 30000);
  load();
})();
