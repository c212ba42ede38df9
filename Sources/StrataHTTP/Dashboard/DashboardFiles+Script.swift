// The dashboard's script (see DashboardAsset.swift): polls /api/v1 every two seconds and
// redraws. The pool's figures, the space bar, one tree per volume (snapshots under their
// volume in creation order, clones under the snapshot they were made from), a graph of IOPS
// and throughput per volume from the difference of two polls of /api/v1/statistics, the
// connections and the replication jobs with their lag. When the API answers 401 (a daemon with
// --http-token-file), it asks for the token once and keeps it for the tab's session.

extension DashboardFiles {
    static let script = #"""
        "use strict";
        const POLL_MS = 2000;
        const HISTORY = 60;
        const COLORS = ["#1f6feb", "#bf3989", "#1a7f37", "#bc4c00", "#8250df", "#0969da", "#cf222e", "#4d2d00"];
        const history = new Map();   // volume -> [{t, iops, bps}]
        let previous = null;          // the last statistics poll: {t, totals: Map(volume -> {ops, bytes})}

        function formatBytes(n) {
          const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
          let i = 0, v = n;
          while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
          return (i === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 2 : 1)) + " " + units[i];
        }
        function el(tag, attrs, ...children) {
          const node = document.createElement(tag);
          for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
          for (const c of children) node.append(c);
          return node;
        }
        function bytesFigure(id, n) {
          const node = document.getElementById(id);
          node.textContent = formatBytes(n);
          node.dataset.bytes = String(n);
        }
        function countFigure(id, n) {
          const node = document.getElementById(id);
          node.textContent = String(n);
          node.dataset.count = String(n);
        }

        async function api(path) {
          const headers = {};
          const token = sessionStorage.getItem("strata-token");
          if (token) headers["Authorization"] = "Bearer " + token;
          const response = await fetch("/api/v1/" + path, { headers, cache: "no-store" });
          if (response.status === 401) {
            const entered = window.prompt("This Strata daemon needs its HTTP token (--http-token-file):");
            if (entered) { sessionStorage.setItem("strata-token", entered.trim()); return api(path); }
          }
          if (!response.ok) {
            let message = response.status + " " + response.statusText;
            try { message = (await response.json()).message; } catch (e) { /* the status says it */ }
            throw new Error(path + ": " + message);
          }
          return response.json();
        }

        function drawPool(pool, volumes) {
          bytesFigure("pool-capacity", pool.capacityBytes);
          bytesFigure("pool-used", pool.dataUsedBytes);
          bytesFigure("pool-free", pool.dataFreeBytes);
          bytesFigure("pool-metadata", pool.metadataUsedBytes);
          countFigure("pool-volumes", pool.volumes);
          countFigure("pool-snapshots", pool.snapshots);
          const bar = document.getElementById("space-bar");
          const legend = document.getElementById("space-legend");
          bar.replaceChildren();
          legend.replaceChildren();
          const ns = "http://www.w3.org/2000/svg";
          const scale = pool.capacityBytes > 0 ? 1000 / pool.capacityBytes : 0;
          let x = 0;
          volumes.forEach((volume, i) => {
            const width = Math.min(volume.allocatedBytes * scale, 1000 - x);
            const rect = document.createElementNS(ns, "rect");
            rect.setAttribute("x", x); rect.setAttribute("y", 0);
            rect.setAttribute("width", Math.max(width, 0)); rect.setAttribute("height", 40);
            rect.setAttribute("fill", COLORS[i % COLORS.length]);
            rect.setAttribute("data-volume", volume.name);
            const title = document.createElementNS(ns, "title");
            title.textContent = volume.name + ": " + formatBytes(volume.allocatedBytes);
            rect.append(title);
            bar.append(rect);
            x += width;
            legend.append(el("span", { "class": "legend-volume", "data-volume": volume.name, "data-bytes": String(volume.allocatedBytes) },
              el("span", { "class": "swatch", "style": "background:" + COLORS[i % COLORS.length] }),
              volume.name + " " + formatBytes(volume.allocatedBytes)));
          });
          legend.append(el("span", { "class": "legend-free", "data-bytes": String(pool.dataFreeBytes) },
            el("span", { "class": "swatch", "style": "background:#eaeef2;border:1px solid #c9d1d9" }),
            "free " + formatBytes(pool.dataFreeBytes)));
        }

        function volumeNode(volume, snapshotsOf, clonesOf) {
          const kind = volume.origin ? "clone" : "volume";
          const detail = formatBytes(volume.sizeBytes) + ", " + formatBytes(volume.allocatedBytes) + " allocated" +
            (volume.origin ? ", clone of " + volume.origin : "");
          const item = el("li", { "data-kind": "volume", "data-name": volume.name },
            el("span", { "class": "node " + kind, "data-size-bytes": String(volume.sizeBytes), "data-allocated-bytes": String(volume.allocatedBytes) },
              el("span", { "class": "name" }, volume.name), el("span", { "class": "detail" }, detail)));
          const snapshots = snapshotsOf.get(volume.name) || [];
          if (snapshots.length > 0) {
            const list = el("ul");
            for (const snapshot of snapshots) list.append(snapshotNode(snapshot, snapshotsOf, clonesOf));
            item.append(list);
          }
          return item;
        }
        function snapshotNode(snapshot, snapshotsOf, clonesOf) {
          const full = snapshot.volume + "@" + snapshot.name;
          const item = el("li", { "data-kind": "snapshot", "data-name": full },
            el("span", { "class": "node snapshot", "data-exclusive-bytes": String(snapshot.exclusiveBytes) },
              el("span", { "class": "name" }, "@" + snapshot.name),
              el("span", { "class": "detail" }, formatBytes(snapshot.exclusiveBytes) + " exclusive, " + snapshot.createdAt)));
          const clones = clonesOf.get(full) || [];
          if (clones.length > 0) {
            const list = el("ul");
            for (const clone of clones) list.append(volumeNode(clone, snapshotsOf, clonesOf));
            item.append(list);
          }
          return item;
        }
        function drawTrees(volumes, snapshots) {
          const byName = new Map(volumes.map(v => [v.name, v]));
          const snapshotsOf = new Map();
          const ordered = [...snapshots].sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.name.localeCompare(b.name)));
          for (const s of ordered) {
            if (!snapshotsOf.has(s.volume)) snapshotsOf.set(s.volume, []);
            snapshotsOf.get(s.volume).push(s);
          }
          const present = new Set(snapshots.map(s => s.volume + "@" + s.name));
          const clonesOf = new Map();
          const roots = [];
          for (const v of volumes) {
            if (v.origin && present.has(v.origin)) {
              if (!clonesOf.has(v.origin)) clonesOf.set(v.origin, []);
              clonesOf.get(v.origin).push(v);
            } else {
              roots.push(v);
            }
          }
          const trees = document.getElementById("trees");
          trees.replaceChildren();
          for (const root of roots) trees.append(el("ul", { "class": "tree" }, volumeNode(root, snapshotsOf, clonesOf)));
          if (roots.length === 0) trees.append(el("p", { "class": "empty" }, "No volumes yet: strata volume create NAME --size SIZE"));
          return byName;
        }

        function recordStatistics(statistics) {
          const now = performance.now() / 1000;
          const totals = new Map();
          for (const entry of statistics) {
            const total = totals.get(entry.volume) || { ops: 0, bytes: 0 };
            for (const op of Object.values(entry.operations)) { total.ops += op.count; total.bytes += op.bytes; }
            totals.set(entry.volume, total);
          }
          if (previous) {
            const seconds = Math.max(now - previous.t, 0.001);
            for (const [volume, total] of totals) {
              const before = previous.totals.get(volume) || { ops: 0, bytes: 0 };
              const points = history.get(volume) || [];
              points.push({ iops: Math.max(total.ops - before.ops, 0) / seconds, bps: Math.max(total.bytes - before.bytes, 0) / seconds });
              while (points.length > HISTORY) points.shift();
              history.set(volume, points);
            }
          }
          previous = { t: now, totals };
        }
        function drawLine(context, points, key, color, width, height) {
          const max = Math.max(1, ...points.map(p => p[key]));
          context.strokeStyle = color; context.lineWidth = 2; context.beginPath();
          points.forEach((p, i) => {
            const x = width - (points.length - 1 - i) * (width / (HISTORY - 1));
            const y = height - 4 - (p[key] / max) * (height - 8);
            if (i === 0) context.moveTo(x, y); else context.lineTo(x, y);
          });
          context.stroke();
        }
        function drawGraphs(volumes) {
          const graphs = document.getElementById("graphs");
          graphs.replaceChildren();
          for (const volume of volumes) {
            const points = history.get(volume.name) || [];
            const last = points[points.length - 1] || { iops: 0, bps: 0 };
            const canvas = el("canvas", { "width": "600", "height": "90" });
            graphs.append(el("div", { "class": "graph", "data-volume": volume.name },
              el("h3", {}, volume.name),
              el("span", { "class": "now" }, "IOPS " + last.iops.toFixed(0) + " (blue), throughput " + formatBytes(last.bps) + "/s (orange)"),
              canvas));
            const context = canvas.getContext("2d");
            drawLine(context, points, "iops", "#1f6feb", canvas.width, canvas.height);
            drawLine(context, points, "bps", "#bc4c00", canvas.width, canvas.height);
          }
        }

        function fillTable(id, rows, empty) {
          const body = document.querySelector("#" + id + " tbody");
          body.replaceChildren();
          if (rows.length === 0) {
            const columns = document.querySelectorAll("#" + id + " th").length;
            body.append(el("tr", {}, el("td", { "class": "empty", "colspan": String(columns) }, empty)));
          }
          for (const cells of rows) body.append(el("tr", {}, ...cells.map(c => el("td", {}, c))));
        }

        async function poll() {
          const status = document.getElementById("status");
          try {
            const [pool, volumes, snapshots, connections, replication, statistics] = await Promise.all(
              ["pool", "volumes", "snapshots", "connections", "replication", "statistics"].map(api));
            drawPool(pool, volumes);
            drawTrees(volumes, snapshots);
            recordStatistics(statistics);
            drawGraphs(volumes);
            fillTable("connections", connections.map(c => [c.protocolName, c.remote, c.export || "(negotiating)"]), "no connections");
            fillTable("replication", replication.map(j => [j.volume, j.peer, j.state, j.lastReplicated || "never",
              j.lagSeconds == null ? "–" : j.lagSeconds.toFixed(1) + " s", formatBytes(j.bytesSent)]), "no replication jobs");
            status.textContent = "pool " + pool.uuid + ", generation " + pool.generation + ", updated " + new Date().toLocaleTimeString();
            status.className = "status";
            document.body.dataset.loaded = "true";
          } catch (error) {
            status.textContent = String(error.message || error);
            status.className = "status error";
          }
        }
        poll();
        setInterval(poll, POLL_MS);
        """#
}
