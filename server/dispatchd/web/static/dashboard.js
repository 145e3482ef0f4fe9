// Live refresh of the queues table: polls /api/queues every 2 s (under the cap
// of once a second) and rewrites the cells with textContent, so names stay text.
"use strict";
(function () {
  const table = document.getElementById("queues");
  if (!table) return;
  const cols = ["pending", "scheduled", "underway", "width", "rate", "paused", "workers"];
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
      }
      document.body.dataset.refreshed = String(Date.now());
    } catch (e) {
      // the server is draining or gone: keep the last picture
    }
  }
  setInterval(refresh, 2000);
})();
