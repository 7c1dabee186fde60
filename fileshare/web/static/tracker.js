// The tracker's status page: polls /api/v1/ every 2 s and redraws. Plain DOM, no library.
"use strict";

(function () {
  const POLL_MS = 2000;
  const HISTORY_MS = 10 * 60 * 1000; // the chart's span
  const SVG = "http://www.w3.org/2000/svg";
  const history = []; // {t, hosts, started, finished}
  let query = "*";
  let paged = false; // "More" was pressed: keep the pages shown instead of refreshing the first

  const $ = (id) => document.getElementById(id);

  async function api(path) {
    const reply = await fetch("/api/v1/" + path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    let body = null;
    try {
      body = await reply.json();
    } catch (e) {
      throw new Error("HTTP " + reply.status);
    }
    if (!reply.ok) {
      const error = new Error(body && body.message ? body.message : "HTTP " + reply.status);
      error.status = reply.status;
      throw error;
    }
    return body;
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return i === 0 ? n + " B" : n.toFixed(1) + " " + units[i];
  }

  function duration(seconds) {
    const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (d) return d + " d " + h + " h";
    if (h) return h + " h " + m + " min";
    if (m) return m + " min " + s + " s";
    return s + " s";
  }

  function showPeers(reply) {
    const peers = reply.peers;
    const body = $("peers");
    const rows = [];
    const group = peers.some((p) => p.tracker);
    for (const p of peers) {
      const tr = document.createElement("tr");
      tr.dataset.name = p.name;
      cell(tr, p.name, "name");
      cell(tr, p.address, "wide");
      cell(tr, p.online_since.replace("T", " ").replace("Z", " UTC"), "wide");
      cell(tr, p.files, "num");
      cell(tr, p.rtt_ms === null ? "–" : p.rtt_ms + " ms", "num wide");
      const where = cell(tr, p.tracker, "wide");
      where.hidden = !group;
      rows.push(tr);
    }
    if (!rows.length) {
      const tr = document.createElement("tr");
      cell(tr, "no peer is online", "muted").colSpan = 6;
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    document.querySelectorAll(".tracker-col").forEach((th) => { th.hidden = !group; });
    // The API sends one page of peers (the first names); the count is of every one online.
    $("peers-count").textContent = "(" + reply.online + (reply.next ? "; the first " + peers.length + " by name shown" : "") + ")";
  }

  function fileRow(f) {
    const tr = document.createElement("tr");
    tr.dataset.name = f.name;
    cell(tr, f.name, "name");
    cell(tr, bytes(f.size), "num");
    cell(tr, f.holders, "num");
    cell(tr, f.online_holders, "num");
    cell(tr, f.root.slice(0, 16) + "…", "wide root").title = f.root;
    return tr;
  }

  let nextPage = null;

  async function loadFiles(more) {
    const path = "files?q=" + encodeURIComponent(query) + (more && nextPage ? "&page=" + encodeURIComponent(nextPage) : "");
    let reply;
    try {
      reply = await api(path);
    } catch (e) {
      if (e.status === 400) {
        $("search-error").textContent = e.message;
        $("search-error").hidden = false;
        $("files").replaceChildren();
        $("more").hidden = true;
        return;
      }
      throw e;
    }
    $("search-error").hidden = true;
    const rows = reply.files.map(fileRow);
    if (more) {
      $("files").append(...rows);
    } else {
      $("files").replaceChildren(...rows);
    }
    nextPage = reply.next;
    $("more").hidden = !nextPage;
    const shown = $("files").children.length;
    $("files-count").textContent = shown + " file" + (shown === 1 ? "" : "s") + (nextPage ? " shown; more follow" : "");
  }

  function showStats(s) {
    $("uptime").textContent = "up " + duration(s.uptime_s);
    $("hosts-online").textContent = s.hosts_online;
    $("files-indexed").textContent = s.files_indexed;
    $("logins").textContent = s.logins.last_minute;
    $("failed-logins").textContent = s.failed_logins.last_minute;
    $("tickets-issued").textContent = s.tickets_issued.last_minute;
    $("fetches-started").textContent = s.fetches_started.last_minute;
    $("fetches-finished").textContent = s.fetches_finished.last_minute;
    const now = Date.now();
    history.push({ t: now, hosts: s.hosts_online, started: s.fetches_started.last_minute, finished: s.fetches_finished.last_minute });
    while (history.length && history[0].t < now - HISTORY_MS) history.shift();
    drawChart(now);
  }

  function drawChart(now) {
    const svg = $("chart");
    const width = 600, height = 120, pad = 4;
    let top = 1;
    for (const h of history) top = Math.max(top, h.hosts, h.started, h.finished);
    // The chart spans what was seen, from one minute up to HISTORY_MS, so a page just opened is not empty.
    const span = Math.min(HISTORY_MS, Math.max(60 * 1000, now - history[0].t));
    const x = (t) => ((t - (now - span)) / span) * width;
    const y = (v) => height - pad - (v / top) * (height - 2 * pad);
    const children = [];
    for (const fraction of [0.5, 1]) {
      const line = document.createElementNS(SVG, "line");
      line.setAttribute("class", "grid");
      line.setAttribute("x1", "0");
      line.setAttribute("x2", String(width));
      line.setAttribute("y1", String(y(top * fraction)));
      line.setAttribute("y2", String(y(top * fraction)));
      children.push(line);
    }
    for (const key of ["hosts", "started", "finished"]) {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("class", key);
      line.setAttribute("points", history.map((h) => x(h.t).toFixed(1) + "," + y(h[key]).toFixed(1)).join(" "));
      children.push(line);
    }
    const label = document.createElementNS(SVG, "title");
    label.textContent = "top of the chart: " + top;
    children.push(label);
    svg.replaceChildren(...children);
  }

  async function poll() {
    try {
      const [stats, peers] = await Promise.all([api("stats"), api("peers")]);
      showStats(stats);
      showPeers(peers);
      if (!paged) await loadFiles(false);
      $("problem").hidden = true;
    } catch (e) {
      $("problem").textContent = "cannot reach the tracker: " + e.message;
      $("problem").hidden = false;
    } finally {
      window.setTimeout(poll, POLL_MS);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      query = $("search").value.trim() || "*";
      paged = false;
      loadFiles(false).catch((e) => {
        $("search-error").textContent = e.message;
        $("search-error").hidden = false;
      });
    });
    $("more").addEventListener("click", () => {
      paged = true;
      loadFiles(true).catch(() => {});
    });
    poll();
  });
})();
