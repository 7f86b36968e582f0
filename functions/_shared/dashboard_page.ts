/**
 * The dashboard page as one HTML string: inline CSS and plain JavaScript drawing inline SVG charts,
 * no build step and no external resource (the CSP forbids them). It holds no data: it fetches
 * `<api>/data` and `<api>/deliveries/<id>` with the token the user gives (kept in sessionStorage,
 * or taken from the URL fragment `#token=...&workflow=...&since=...`). `<api>` is the page's own
 * path when the function serves it, or the deployed function's `.../dashboard` URL when
 * `email-status dashboard --url` serves it locally (a `<meta name="dashboard-api">`).
 */
export function dashboardPage(options: { api?: URL } = {}): string {
  return page.replace("@API@", options.api ? escapeAttribute(options.api.href) : "");
}

function escapeAttribute(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

const page = String.raw`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="dashboard-api" content="@API@">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>email-worker · dashboard</title>
<style>
  :root { --bg: #f7f8f9; --panel: #fff; --ink: #172b4d; --dim: #626f86; --line: #dcdfe4; --accent: #1d7afc; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background: var(--bg); color: var(--ink); }
  header { display: flex; align-items: center; gap: 16px; padding: 12px 24px; background: #1f2a44; color: #fff; flex-wrap: wrap; }
  header h1 { font-size: 18px; margin: 0; }
  header .sub { color: #b3bac5; }
  header form { margin-left: auto; display: flex; gap: 8px; align-items: center; }
  select, button, input { font: inherit; padding: 4px 8px; border-radius: 4px; border: 1px solid var(--line); }
  button { background: var(--accent); color: #fff; border-color: var(--accent); cursor: pointer; }
  button.ghost { background: transparent; color: inherit; border-color: #8590a2; }
  main { padding: 16px 24px 32px; }
  .cards { display: grid; grid-template-columns: repeat(5, minmax(140px, 1fr)); gap: 12px; margin-bottom: 16px; }
  .card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
  .card .k { color: var(--dim); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
  .card .v { font-size: 26px; font-weight: 600; margin-top: 4px; }
  .grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; }
  .panel { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; min-width: 0; }
  .panel.wide { grid-column: 1 / -1; }
  .panel h2 { font-size: 14px; margin: 0 0 8px; }
  .legend { display: flex; gap: 14px; flex-wrap: wrap; margin-top: 6px; font-size: 12px; }
  .legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; vertical-align: -1px; }
  svg text { font: 11px system-ui, sans-serif; fill: var(--dim); }
  svg text.val { fill: var(--ink); font-weight: 600; }
  table { width: 100%; border-collapse: collapse; font-size: 13px; }
  th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
  td.msg { white-space: normal; color: var(--dim); }
  tbody tr { cursor: pointer; }
  tbody tr:hover { background: #e9f2ff; }
  .badge { display: inline-block; padding: 1px 6px; border-radius: 3px; color: #fff; font-size: 12px; }
  .empty { color: var(--dim); padding: 12px 0; }
  #signin { max-width: 420px; margin: 64px auto; background: var(--panel); padding: 24px; border-radius: 8px; border: 1px solid var(--line); }
  #signin input { width: 100%; margin: 8px 0; }
  #signin-error { color: #ae2e24; min-height: 1.4em; }
  #timeline { position: fixed; top: 0; right: 0; bottom: 0; width: min(520px, 100%); background: var(--panel); border-left: 1px solid var(--line);
    box-shadow: -4px 0 16px rgba(9, 30, 66, .15); padding: 16px 20px; overflow: auto; }
  #timeline ol { list-style: none; padding: 0; margin: 12px 0; border-left: 2px solid var(--line); }
  #timeline li { margin: 0 0 12px 0; padding-left: 14px; position: relative; }
  #timeline li::before { content: ""; position: absolute; left: -6px; top: 4px; width: 10px; height: 10px; border-radius: 50%; background: var(--c, #8590a2); }
  #timeline .meta { color: var(--dim); font-size: 12px; }
  [hidden] { display: none !important; }
</style>
</head>
<body>
<header>
  <h1>email-worker</h1><span class="sub">delivery metrics</span>
  <form id="controls" hidden>
    <label>Window <select id="since"><option value="1h">last hour</option><option value="6h">6 hours</option>
      <option value="24h" selected>24 hours</option><option value="7d">7 days</option><option value="30d">30 days</option></select></label>
    <label>Workflow <select id="workflow"><option value="">all</option></select></label>
    <button type="button" id="refresh">Refresh</button>
    <button type="button" id="signout" class="ghost">Sign out</button>
  </form>
</header>
<section id="signin" hidden>
  <form id="signin-form">
    <h2>Sign in</h2>
    <p>Paste a support or admin user's access token, or the dashboard token.</p>
    <input id="token-input" type="password" autocomplete="off" aria-label="token">
    <button type="submit">Open the dashboard</button>
    <p id="signin-error" role="alert"></p>
  </form>
</section>
<main id="main" hidden>
  <div class="cards">
    <div class="card"><div class="k">Deliveries</div><div class="v" id="card-total" data-testid="card-total">-</div></div>
    <div class="card"><div class="k">Sent</div><div class="v" id="card-sent" data-testid="card-sent">-</div></div>
    <div class="card"><div class="k">Success rate</div><div class="v" id="card-success" data-testid="card-success">-</div></div>
    <div class="card"><div class="k">Latency p95</div><div class="v" id="card-p95" data-testid="card-p95">-</div></div>
    <div class="card"><div class="k">Dead letters</div><div class="v" id="dlq-size" data-testid="dlq-size">-</div></div>
  </div>
  <div class="grid">
    <section class="panel wide"><h2>Deliveries over time, by status</h2><div id="chart-series"></div><div class="legend" id="legend-series"></div></section>
    <section class="panel"><h2>Success rate by workflow</h2><div id="chart-success"></div></section>
    <section class="panel"><h2>Latency percentiles (queued to sent)</h2><div id="chart-latency"></div></section>
    <section class="panel"><h2>Error codes</h2><div id="chart-errors"></div></section>
    <section class="panel"><h2>Dead-letter queue</h2><div id="chart-dlq"></div></section>
    <section class="panel wide"><h2>Recent failures</h2>
      <table><thead><tr><th>When</th><th>Delivery</th><th>Workflow</th><th>Recipient</th><th>Status</th><th>Attempts</th><th>Error</th></tr></thead>
      <tbody id="failures"></tbody></table><div class="empty" id="failures-empty" hidden>no failures in this window</div>
    </section>
  </div>
  <div id="loaded" data-testid="loaded" hidden></div>
</main>
<aside id="timeline" hidden aria-label="delivery timeline">
  <button type="button" class="ghost" id="timeline-close" style="float:right">Close</button>
  <h2 id="timeline-title">Delivery</h2>
  <div id="timeline-summary" class="meta"></div>
  <ol id="timeline-events"></ol>
</aside>
<script>
"use strict";
(function () {
  var COLORS = { queued: "#8590a2", in_progress: "#1d7afc", retrying: "#e2b203", sent: "#22a06b", failed: "#e34935",
    dead_letter: "#943d73", suppressed: "#6e5dc6", purged: "#44546f" };
  var ORDER = ["sent", "queued", "in_progress", "retrying", "failed", "dead_letter", "suppressed", "purged"];
  var KEY = "email-worker-dashboard-token";
  var SVG = "http://www.w3.org/2000/svg";
  var apiBase = document.querySelector('meta[name="dashboard-api"]').getAttribute("content");
  var base = (apiBase || location.pathname).replace(/\/+$/, "");
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, attrs, children) {
    var n = tag.indexOf("svg:") === 0 ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { n.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) { n.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return n;
  }
  function clear(n) { while (n.firstChild) n.removeChild(n.firstChild); return n; }
  function color(s) { return COLORS[s] || "#8590a2"; }
  function pct(v) { return v === null || v === undefined ? "-" : (Number(v) * 100).toFixed(1) + "%"; }
  function ms(v) {
    if (v === null || v === undefined) return "-";
    v = Number(v);
    return v >= 1000 ? (v / 1000).toFixed(2) + " s" : Math.round(v) + " ms";
  }
  function ago(s) {
    if (s === null || s === undefined) return "-";
    s = Number(s);
    if (s < 120) return Math.round(s) + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  }
  function time(iso, withDate) {
    var d = new Date(iso);
    var hm = String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
    return withDate ? d.toISOString().slice(5, 10) + " " + hm : hm;
  }

  // --- state: the fragment carries token (taken out at once), workflow and window ---
  var state = { since: "24h", workflow: "" };
  function readHash() {
    var params = new URLSearchParams(location.hash.slice(1));
    if (params.get("token")) sessionStorage.setItem(KEY, params.get("token"));
    state.since = params.get("since") || "24h";
    state.workflow = params.get("workflow") || "";
  }
  readHash();
  function saveHash() {
    var p = new URLSearchParams();
    if (state.workflow) p.set("workflow", state.workflow);
    if (state.since !== "24h") p.set("since", state.since);
    history.replaceState(null, "", location.pathname + location.search + (p.toString() ? "#" + p : ""));
  }
  saveHash();

  function api(path) {
    return fetch(base + path, { headers: { authorization: "Bearer " + (sessionStorage.getItem(KEY) || "") } })
      .then(function (res) {
        return res.json().catch(function () { return {}; }).then(function (body) {
          if (!res.ok) {
            var err = new Error((body.error && body.error.message) || ("HTTP " + res.status));
            err.status = res.status;
            throw err;
          }
          return body;
        });
      });
  }

  function showSignin(message) {
    $("main").hidden = true;
    $("controls").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
  }

  function load() {
    if (!sessionStorage.getItem(KEY)) return showSignin("");
    $("loaded").hidden = true;
    var q = "?since=" + encodeURIComponent(state.since) + (state.workflow ? "&workflow=" + encodeURIComponent(state.workflow) : "");
    return api("/data" + q).then(function (data) {
      $("signin").hidden = true;
      $("main").hidden = false;
      $("controls").hidden = false;
      render(data);
      $("loaded").hidden = false;
      $("loaded").setAttribute("data-loaded-at", String(Date.now()));
    }).catch(function (e) {
      if (e.status === 401 || e.status === 403) {
        sessionStorage.removeItem(KEY);
        showSignin(e.message);
      } else {
        $("signin-error").textContent = e.message;
      }
    });
  }

  // --- charts ---
  function render(data) {
    var m = data.metrics, t = m.totals;
    $("since").value = data.window.name;
    var wf = $("workflow"), known = {};
    clear(wf).appendChild(el("option", { value: "" }, ["all"]));
    data.workflows.concat(state.workflow ? [state.workflow] : []).forEach(function (w) {
      if (known[w]) return;
      known[w] = true;
      wf.appendChild(el("option", { value: w }, [w]));
    });
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
    failures(data.recent_failures);
  }

  function series(data) {
    var W = 1100, H = 240, L = 40, B = 24, T = 10;
    var step = data.window.bucket_seconds * 1000, since = Date.parse(data.window.since), until = Date.parse(data.window.until);
    var n = Math.max(1, Math.ceil((until - since) / step));
    var buckets = [], totals = {};
    for (var i = 0; i < n; i++) buckets.push({});
    data.series.forEach(function (r) {
      var k = Math.min(n - 1, Math.max(0, Math.floor((Date.parse(r.t) - since) / step)));
      buckets[k][r.status] = (buckets[k][r.status] || 0) + r.n;
      totals[r.status] = (totals[r.status] || 0) + r.n;
    });
    var max = 1;
    buckets.forEach(function (b) { var s = 0; Object.keys(b).forEach(function (k) { s += b[k]; }); max = Math.max(max, s); });
    var lines = Math.min(4, max);
    max = Math.ceil(max / lines) * lines;
    var svg = el("svg:svg", { viewBox: "0 0 " + W + " " + H, width: "100%", role: "img", "aria-label": "deliveries over time by status" });
    var bw = (W - L - 8) / n;
    for (var g = 0; g <= lines; g++) {
      var y = T + (H - T - B) * (1 - g / lines);
      svg.appendChild(el("svg:line", { x1: L, x2: W - 4, y1: y, y2: y, stroke: "#eef0f2" }));
      svg.appendChild(el("svg:text", { x: L - 6, y: y + 4, "text-anchor": "end" }, [String(max * g / lines)]));
    }
    buckets.forEach(function (b, i) {
      var x = L + i * bw, y = H - B;
      ORDER.concat(Object.keys(b).filter(function (s) { return ORDER.indexOf(s) < 0; })).forEach(function (s) {
        if (!b[s]) return;
        var h = (H - T - B) * b[s] / max;
        y -= h;
        svg.appendChild(el("svg:rect", { x: x + 1, y: y, width: Math.max(1, bw - 2), height: h, fill: color(s),
          "data-status": s, "data-count": b[s] }, [el("svg:title", {}, [s + ": " + b[s] + " at " + time(since + i * step, true)])]));
      });
      if (i % Math.ceil(n / 8) === 0) {
        svg.appendChild(el("svg:text", { x: x + bw / 2, y: H - 6, "text-anchor": "middle" }, [time(since + i * step, n * step > 86400000)]));
      }
    });
    clear($("chart-series")).appendChild(svg);
    var legend = clear($("legend-series"));
    ORDER.concat(Object.keys(totals).filter(function (s) { return ORDER.indexOf(s) < 0; })).forEach(function (s) {
      if (!totals[s]) return;
      legend.appendChild(el("span", { "data-testid": "series-total", "data-status": s },
        [el("i", { style: "background:" + color(s) }), s + " " + totals[s]]));
    });
    if (!Object.keys(totals).length) legend.appendChild(el("span", { class: "empty" }, ["no deliveries in this window"]));
  }

  function hbars(target, rows, opts) {
    var W = 520, row = 26, L = opts.labelWidth || 150, R = 110;
    var svg = el("svg:svg", { viewBox: "0 0 " + W + " " + Math.max(row, rows.length * row + 4), width: "100%", role: "img", "aria-label": opts.label });
    var max = opts.max || Math.max.apply(null, rows.map(function (r) { return r.value || 0; }).concat([1]));
    rows.forEach(function (r, i) {
      var y = i * row + 2, w = (W - L - R) * (r.value || 0) / max;
      svg.appendChild(el("svg:text", { x: L - 8, y: y + 16, "text-anchor": "end" }, [r.label]));
      svg.appendChild(el("svg:rect", { x: L, y: y + 4, width: W - L - R, height: row - 10, fill: "#f1f2f4", rx: 3 }));
      var attrs = { x: L, y: y + 4, width: Math.max(0, w), height: row - 10, fill: r.color || "#1d7afc", rx: 3 };
      Object.keys(r.data || {}).forEach(function (k) { attrs["data-" + k] = r.data[k]; });
      svg.appendChild(el("svg:rect", attrs, [el("svg:title", {}, [r.label + ": " + r.text])]));
      var tattrs = { x: W - R + 6, y: y + 16, class: "val" };
      Object.keys(r.testid || {}).forEach(function (k) { tattrs[k] = r.testid[k]; });
      svg.appendChild(el("svg:text", tattrs, [r.text]));
    });
    clear(target).appendChild(rows.length ? svg : el("div", { class: "empty" }, [opts.empty]));
  }

  function success(m) {
    var rows = m.workflows.filter(function (w) { return w.completed > 0; }).map(function (w) {
      var sent = w.by_status.sent || 0;
      return { label: w.workflow, value: Number(w.success_rate), color: Number(w.success_rate) >= 0.95 ? "#22a06b" : Number(w.success_rate) >= 0.8 ? "#e2b203" : "#e34935",
        text: pct(w.success_rate) + " (" + sent + "/" + w.completed + ")",
        testid: { "data-testid": "success-rate", "data-workflow": w.workflow } };
    });
    hbars($("chart-success"), rows, { max: 1, label: "success rate by workflow", empty: "nothing completed in this window" });
  }

  function latency(m) {
    var rows = [], tint = { p50: "#579dff", p95: "#1d7afc", p99: "#0c66e4" };
    var flows = m.workflows.filter(function (w) { return w.latency_ms.p50 !== null; });
    if (flows.length > 1) flows = [{ workflow: "(all)", latency_ms: m.totals.latency_ms }].concat(flows);
    flows.forEach(function (w) {
      ["p50", "p95", "p99"].forEach(function (p) {
        rows.push({ label: w.workflow + " " + p, value: Number(w.latency_ms[p]), color: tint[p], text: ms(w.latency_ms[p]),
          testid: { "data-testid": "latency", "data-workflow": w.workflow, "data-percentile": p } });
      });
    });
    hbars($("chart-latency"), rows, { label: "latency percentiles", empty: "nothing sent in this window", labelWidth: 190 });
  }

  function errors(m) {
    var byCode = {};
    m.errors.forEach(function (e) { byCode[e.error_code] = (byCode[e.error_code] || 0) + Number(e.deliveries); });
    var rows = Object.keys(byCode).sort(function (a, b) { return byCode[b] - byCode[a] || (a < b ? -1 : 1); }).slice(0, 12)
      .map(function (c) {
        return { label: c, value: byCode[c], color: "#e34935", text: String(byCode[c]),
          testid: { "data-testid": "error-code", "data-code": c } };
      });
    hbars($("chart-errors"), rows, { label: "error codes", empty: "no errors in this window", labelWidth: 190 });
  }

  function dlq(m) {
    var q = m.dead_letter_queue;
    var rows = q.workflows.map(function (w) {
      return { label: w.workflow, value: Number(w.size), color: "#943d73", text: w.size + " (oldest " + ago(w.oldest_age_seconds) + ")",
        testid: { "data-testid": "dlq-workflow", "data-workflow": w.workflow } };
    });
    hbars($("chart-dlq"), rows, { label: "dead letters by workflow", empty: "the dead-letter queue is empty" });
  }

  function failures(list) {
    var body = clear($("failures"));
    $("failures-empty").hidden = list.length > 0;
    list.forEach(function (f) {
      var tr = el("tr", { "data-testid": "failure-row", "data-delivery-id": f.delivery_id, tabindex: "0" }, [
        el("td", {}, [time(f.updated_at, true)]), el("td", {}, [f.delivery_id]), el("td", {}, [f.workflow]), el("td", {}, [f.recipient]),
        el("td", {}, [el("span", { class: "badge", style: "background:" + color(f.status) }, [f.status])]),
        el("td", {}, [String(f.attempts)]), el("td", { class: "msg" }, [(f.last_error_code || "") + (f.last_error_message ? " · " + f.last_error_message : "")])
      ]);
      tr.addEventListener("click", function () { openTimeline(f.delivery_id); });
      tr.addEventListener("keydown", function (e) { if (e.key === "Enter") openTimeline(f.delivery_id); });
      body.appendChild(tr);
    });
  }

  function openTimeline(id) {
    $("timeline").hidden = false;
    $("timeline-title").textContent = id;
    clear($("timeline-events"));
    $("timeline-summary").textContent = "loading…";
    api("/deliveries/" + encodeURIComponent(id)).then(function (d) {
      $("timeline-summary").textContent = d.workflow + " · " + d.recipient + " · " + d.status + " · attempts " + d.attempts + "/" + d.max_attempts;
      d.events.forEach(function (e) {
        var what = (e.from_status ? e.from_status + " → " : "") + e.to_status;
        $("timeline-events").appendChild(el("li", { "data-testid": "timeline-event", "data-status": e.to_status, style: "--c:" + color(e.to_status) }, [
          el("div", {}, [el("strong", {}, [what]), " #" + e.attempt + (e.error_code ? " · " + e.error_code : "")]),
          el("div", { class: "meta" }, [new Date(e.created_at).toISOString().replace("T", " ").slice(0, 19) + " UTC · " + e.actor]),
          e.error_message ? el("div", { class: "meta" }, [e.error_message]) : el("span")
        ]));
      });
    }).catch(function (e) { $("timeline-summary").textContent = e.message; });
  }

  $("signin-form").addEventListener("submit", function (e) {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("token-input").value.trim());
    $("token-input").value = "";
    load();
  });
  $("since").addEventListener("change", function () { state.since = this.value; saveHash(); load(); });
  $("workflow").addEventListener("change", function () { state.workflow = this.value; saveHash(); load(); });
  $("refresh").addEventListener("click", load);
  $("signout").addEventListener("click", function () { sessionStorage.removeItem(KEY); showSignin(""); });
  $("timeline-close").addEventListener("click", function () { $("timeline").hidden = true; });
  window.addEventListener("hashchange", function () {
    if (!location.hash) return;
    readHash();
    saveHash();
    load();
  });
  setInterval(function () { if (!$("main").hidden && !document.hidden) load(); }, 30000);
  load();
})();
</script>
</body>
</html>
`;
