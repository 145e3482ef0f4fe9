// Live refresh of the queues table: polls /api/queues every 2 s (under the cap
// of once a second) and rewrites the cells with textContent, so names stay text. The
// sparklines are redrawn with the same arithmetic as sparks.py on the server.
"use strict";
(function () {
  const table = document.getElementById("queues");
  if (!table) return;
  const cols = ["pending", "scheduled", "underway", "width", "rate", "paused", "workers"];
  const WIDTH = 120;
  const HEIGHT = 24;

  // Mirrors sparks.spark_path: one point per bucket, scaled to the largest; null breaks.
  function sparkPath(values) {
    const present = values.filter((v) => v !== null);
    const top = present.length ? Math.max(...present) : 0;
    const scale = top > 0 ? (HEIGHT - 2) / top : 0;
    const step = WIDTH / Math.max(1, values.length - 1);
    const parts = [];
    let penDown = false;
    values.forEach((v, i) => {
      if (v === null) {
        penDown = false;
        return;
      }
      const x = (i * step).toFixed(1);
      const y = (HEIGHT - 1 - v * scale).toFixed(1);
      parts.push((penDown ? "L" : "M") + x + " " + y);
      penDown = true;
    });
    return parts.join(" ");
  }

  function rateLabel(v) {
    return v.toFixed(1) + "/s";
  }

  function waitLabel(v) {
    if (v === null) return "-";
    return v < 10 ? (v * 1000).toFixed(0) + " ms" : v.toFixed(1) + " s";
  }

  function redraw(cell, values, label) {
    const path = cell.querySelector("path");
    const latest = cell.querySelector(".latest");
    if (!values || !path || !latest) return;
    path.setAttribute("d", sparkPath(values));
    latest.textContent = label(values[values.length - 1]);
  }

  async function refresh() {
    try {
      const r = await fetch("/api/queues", { credentials: "same-origin" });
      if (!r.ok) return;
      const data = await r.json();
      const byName = new Map(data.queues.map((q) => [q.name, q]));
      for (const row of table.tBodies[0].rows) {
        const q = byName.get(row.cells[0].textContent);
        if (!q) continue;
        cols.forEach((c, i) => {
          const v = c === "paused" ? (q.paused ? "yes" : "no") : String(q[c]);
          row.cells[i + 1].textContent = v;
        });
        redraw(row.cells[cols.length + 1], q.throughput, rateLabel);
        redraw(row.cells[cols.length + 2], q.wait, waitLabel);
      }
      document.body.dataset.refreshed = String(Date.now());
    } catch (e) {
      // the server is draining or gone: keep the last picture
    }
  }
  setInterval(refresh, 2000);
})();
