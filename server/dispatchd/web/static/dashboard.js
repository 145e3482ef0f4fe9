// Live pages without a reload: the job and queue pages refresh when /api/events (Server-
// Sent Events) says something happened; the overview and the workers page are sent their
// JSON by /api/live/overview and /api/live/workers (Server-Sent Events, once a second when
// it changed); any of them polls its JSON (/api/overview, /api/queues, /api/workers or
// /api/jobs/ID) every 2 s when its stream cannot be had. What
// changed is rewritten with textContent and DOM calls, so names stay text. The sparklines and the overview chart are redrawn with the
// same arithmetic as sparks.py on the server. No inline script anywhere (strict CSP).
"use strict";
(function () {
  const POLL_MS = 2000;
  // With events, a slow poll still catches what no lifecycle event tells (a worker
  // connecting, a width set elsewhere, a reprioritized job).
  const BACKSTOP_MS = 15000;
  const SPARK_W = 120;
  const SPARK_H = 24;
  const CHART_W = 600;
  const CHART_H = 140;
  const COLS = ["pending", "scheduled", "underway", "width", "rate", "paused", "workers"];

  // Mirrors sparks.spark_path: one point per bucket, scaled to the largest; null breaks.
  function sparkPath(values) {
    const present = values.filter((v) => v !== null);
    const top = present.length ? Math.max(...present) : 0;
    const scale = top > 0 ? (SPARK_H - 2) / top : 0;
    const step = SPARK_W / Math.max(1, values.length - 1);
    const parts = [];
    let penDown = false;
    values.forEach((v, i) => {
      if (v === null) {
        penDown = false;
        return;
      }
      const x = (i * step).toFixed(1);
      const y = (SPARK_H - 1 - v * scale).toFixed(1);
      parts.push((penDown ? "L" : "M") + x + " " + y);
      penDown = true;
    });
    return parts.join(" ");
  }

  // Mirrors sparks.chart_path: the three series share one axis, topped at `top`.
  function chartPath(values, top) {
    const scale = top > 0 ? (CHART_H - 4) / top : 0;
    const step = CHART_W / Math.max(1, values.length - 1);
    return values
      .map((v, i) => (i ? "L" : "M") + (i * step).toFixed(1) + " " + (CHART_H - 2 - v * scale).toFixed(1))
      .join(" ");
  }

  function rateLabel(v) {
    return v.toFixed(1) + "/s";
  }

  function waitLabel(v) {
    if (v === null) return "-";
    return v < 10 ? (v * 1000).toFixed(0) + " ms" : v.toFixed(1) + " s";
  }

  function redraw(cell, values, label) {
    if (!cell) return;
    const path = cell.querySelector("path");
    const latest = cell.querySelector(".latest");
    if (!values || !path || !latest) return;
    path.setAttribute("d", sparkPath(values));
    latest.textContent = label(values[values.length - 1]);
  }

  function setText(el, text) {
    if (el && el.textContent !== text) el.textContent = text;
  }

  function countText(q, c) {
    return c === "paused" ? (q.paused ? "yes" : "no") : String(q[c]);
  }

  async function poll(url) {
    const r = await fetch(url, { credentials: "same-origin" });
    if (!r.ok) throw new Error(url + ": " + r.status);
    return r.json();
  }

  const SVG = "http://www.w3.org/2000/svg";

  function sparkCell(row, kind, about) {
    const cell = row.insertCell();
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark " + kind);
    svg.setAttribute("viewBox", "0 0 " + SPARK_W + " " + SPARK_H);
    svg.setAttribute("width", String(SPARK_W));
    svg.setAttribute("height", String(SPARK_H));
    svg.setAttribute("role", "img");
    const title = document.createElementNS(SVG, "title");
    title.textContent = about;
    svg.append(title, document.createElementNS(SVG, "path"));
    const latest = document.createElement("span");
    latest.className = "latest";
    cell.append(svg, " ", latest);
  }

  // A queue made after the page loaded gets a row at the end (the order is the server's
  // at load time: rows never jump under the pointer); a deleted queue's row goes.
  function addQueueRow(table, q) {
    const row = table.tBodies[0].insertRow();
    const link = document.createElement("a");
    link.href = "/queues/" + encodeURIComponent(q.name);
    link.textContent = q.name;
    row.insertCell().append(link);
    COLS.forEach(() => row.insertCell());
    sparkCell(row, "throughput", "jobs finished per second");
    sparkCell(row, "wait", "mean wait before dispatch");
    row.insertCell();
    const pick = document.createElement("input");
    pick.type = "checkbox";
    pick.name = "pick:" + q.name;
    pick.value = "1";
    pick.setAttribute("form", "pick");
    pick.setAttribute("aria-label", "Select queue " + q.name);
    row.insertCell().append(pick);
  }

  function syncQueueRows(table, queues) {
    const names = new Set(queues.map((q) => q.name));
    const shown = new Set();
    for (const row of [...table.tBodies[0].rows]) {
      const name = row.cells[0].textContent;
      if (names.has(name)) shown.add(name);
      else row.remove();
    }
    for (const q of queues) if (!shown.has(q.name)) addQueueRow(table, q);
  }

  // The overview's table: one row per queue, by name.
  function refreshQueueRows(table, queues) {
    const byName = new Map(queues.map((q) => [q.name, q]));
    for (const row of table.tBodies[0].rows) {
      const q = byName.get(row.cells[0].textContent);
      if (!q) continue;
      COLS.forEach((c, i) => setText(row.cells[i + 1], countText(q, c)));
      redraw(row.cells[COLS.length + 1], q.throughput, rateLabel);
      redraw(row.cells[COLS.length + 2], q.wait, waitLabel);
      const note = row.cells[COLS.length + 3];
      if (note && "attention" in q) {
        setText(note, q.attention || "-");
        note.classList.toggle("attention", q.level > 0);
      }
    }
  }

  function refreshTotals(totals) {
    for (const el of document.querySelectorAll("[data-total]")) {
      const v = totals[el.dataset.total];
      if (v === undefined) continue;
      setText(el, el.dataset.total.endsWith("_now") ? v.toFixed(1) : String(v));
    }
  }

  function refreshChart(chart) {
    if (!chart) return;
    for (const path of document.querySelectorAll("#chart path[data-series]")) {
      path.setAttribute("d", chartPath(chart.series[path.dataset.series], chart.top));
    }
    for (const el of document.querySelectorAll("#chart [data-latest]")) {
      const name = el.dataset.latest;
      const v = name === "top" ? chart.top : chart.series[name][chart.series[name].length - 1];
      setText(el, v.toFixed(1));
    }
  }

  async function overview() {
    showOverview(await poll("/api/overview" + window.location.search));
  }

  function showOverview(data) {
    const table = document.getElementById("queues");
    // An answer computed before this page was drawn (cached or pushed a moment earlier)
    // would drop the rows of queues made since: the next one comes within a second.
    if (table && data.at < Number(table.dataset.at)) return;
    if (table) {
      // Every queue is listed (not only the 200 needing attention most): keep rows in step.
      if (data.queues.length === data.totals.queues) syncQueueRows(table, data.queues);
      refreshQueueRows(table, data.queues);
      const none = document.getElementById("no-queues");
      if (none) none.hidden = data.queues.length > 0;
    }
    refreshTotals(data.totals);
    refreshChart(data.chart);
  }

  async function queue() {
    const table = document.getElementById("counts");
    const data = await poll("/api/queues?queue=" + encodeURIComponent(table.dataset.queue));
    const q = data.queues.find((x) => x.name === table.dataset.queue);
    if (!q) return;
    const cells = table.tBodies[0].rows[0].cells;
    COLS.forEach((c, i) => setText(cells[i], countText(q, c)));
  }

  function jobLinks(cell, w) {
    cell.replaceChildren(document.createTextNode(String(w.held)));
    if (!w.held) return;
    cell.append(": ");
    w.held_jobs.forEach((id, i) => {
      if (i) cell.append(", ");
      const a = document.createElement("a");
      a.href = "/jobs/" + encodeURIComponent(id);
      a.textContent = id;
      cell.append(a);
    });
    if (w.held > w.held_jobs.length) cell.append(" and " + (w.held - w.held_jobs.length) + " more");
  }

  async function workers() {
    showWorkers(await poll("/api/workers"));
  }

  // The workers table is rebuilt row by row: workers come and go.
  function showWorkers(data) {
    const table = document.getElementById("workers");
    const fleet = table.dataset.fleet === "yes";
    const body = document.createElement("tbody");
    for (const w of data.workers) {
      const row = body.insertRow();
      const texts = [w.worker_id, w.labels, w.queues, w.credits, null, w.draining, w.connected];
      if (fleet) texts.push(w.replica);
      texts.forEach((t) => {
        const cell = row.insertCell();
        if (t === null) jobLinks(cell, w);
        else cell.textContent = t;
      });
    }
    table.replaceChild(body, table.tBodies[0]);
    const none = document.getElementById("no-workers");
    if (none) none.hidden = data.workers.length > 0;
    const replicas = document.getElementById("replicas");
    if (replicas) {
      const names = [...new Set(data.workers.map((w) => w.replica).filter((r) => r))].sort();
      const list = names.length ? ": " + names.join(", ") : "";
      setText(replicas, data.workers.length + " workers on " + names.length + " replicas" + list + ".");
    }
  }

  // The job page: its changing fields (state badge, attempt, worker, times, error); the
  // actions under it follow on the next load (the state they offer may have moved on).
  async function job() {
    const table = document.getElementById("fields");
    const data = await poll("/api/jobs/" + encodeURIComponent(table.dataset.job));
    for (const row of table.tBodies[0].rows) {
      const value = data.fields[row.dataset.field];
      if (value === undefined) continue;
      const cell = row.cells[1];
      if (row.dataset.field === "State") {
        const badge = cell.querySelector(".state");
        if (badge && badge.textContent !== value) {
          badge.textContent = value;
          badge.className = "state state-" + value.toLowerCase();
        }
      } else {
        setText(cell, value);
      }
    }
  }

  const pages = { overview: overview, queue: queue, workers: workers, job: job };
  const refresh = pages[document.body.dataset.live];
  if (!refresh) return;
  async function tick() {
    try {
      await refresh();
      document.body.dataset.refreshed = String(Date.now());
    } catch (e) {
      // the server is draining or gone: keep the last picture
    }
  }

  let timer = null;
  function startPolling(every) {
    document.body.dataset.liveMode = every === POLL_MS ? "poll" : "events";
    if (timer !== null) clearInterval(timer);
    timer = setInterval(tick, every);
  }

  // An event means "something changed": refresh once, never more than one request at a
  // time and one per GAP_MS (a busy queue has thousands of events a second).
  const GAP_MS = 250;
  let busy = false;
  let again = false;
  async function soon() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      do {
        again = false;
        await tick();
        if (again) await new Promise((done) => setTimeout(done, GAP_MS));
      } while (again);
    } finally {
      busy = false;
    }
  }

  // The job and queue pages listen to /api/events (Server-Sent Events of the job's or the
  // queue's lifecycle); the browser reconnects by itself (with Last-Event-ID). Where that
  // cannot work (no EventSource, or the server refused: too many streams, auth) the page
  // polls as it always did.
  function eventsQuery() {
    const fields = document.getElementById("fields");
    if (document.body.dataset.live === "job" && fields) return "job=" + encodeURIComponent(fields.dataset.job);
    const counts = document.getElementById("counts");
    if (document.body.dataset.live === "queue" && counts) return "queue=" + encodeURIComponent(counts.dataset.queue);
    return null;
  }

  // The overview and the workers page get their figures pushed (/api/live/<page>: the
  // server sends the JSON once a second when it changed, one computation for every tab);
  // refused (too many streams, auth) they poll as the others do.
  const pushed = { overview: showOverview, workers: showWorkers };
  const live = document.body.dataset.live;
  if (live in pushed && typeof EventSource === "function") {
    const stream = new EventSource("/api/live/" + live + window.location.search);
    stream.addEventListener(live, (e) => {
      try {
        pushed[live](JSON.parse(e.data));
        document.body.dataset.refreshed = String(Date.now());
      } catch (err) {
        // a page changed under us: keep the last picture
      }
    });
    stream.onopen = () => {
      if (timer !== null) clearInterval(timer);
      timer = null;
      document.body.dataset.liveMode = "stream";
    };
    stream.onerror = () => {
      if (stream.readyState === EventSource.CLOSED) startPolling(POLL_MS);
    };
    return;
  }

  const query = eventsQuery();
  if (query === null || typeof EventSource !== "function") {
    startPolling(POLL_MS);
    return;
  }
  const source = new EventSource("/api/events?" + query);
  source.onopen = () => {
    startPolling(BACKSTOP_MS);
    soon(); // what changed while it was connecting
  };
  source.onmessage = soon;
  source.addEventListener("missed", soon);
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) startPolling(POLL_MS);
  };
})();
