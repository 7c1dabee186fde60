// The peer's page: the console's commands over /api/v1/.  Plain JavaScript, no framework.
// Everything shown comes from the API and goes into the page as text (textContent), never as HTML.
"use strict";

const FAST = 1000; // ms between polls while fetches run
const SLOW = 5000; // ms between polls otherwise

const $ = (id) => document.getElementById(id);

class ApiFailure extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

async function api(method, path, body) {
  const options = { method: method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const reply = await fetch("/api/v1/" + path, options);
  let data = null;
  try {
    data = await reply.json();
  } catch (e) {
    data = null;
  }
  if (reply.status === 401) {
    window.location.reload(); // signed out of the page: the sign-in form comes back
  }
  if (!reply.ok) {
    throw new ApiFailure((data && data.message) || reply.statusText, data && data.error, reply.status);
  }
  return data;
}

function el(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (className) e.className = className;
  return e;
}

function button(text, onClick, className) {
  const b = el("button", text, className);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

function bytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return i === 0 ? n.toFixed(0) + " B" : n.toFixed(1) + " " + units[i];
}

function seconds(s) {
  if (s === null || s === undefined) return "?";
  if (s < 60) return Math.round(s) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}

function say(id, text, bad) {
  const p = $(id);
  p.textContent = text || "";
  p.className = bad ? "error" : "muted";
}

// -- session ----------------------------------------------------------------------------------

let session = null;

function showSession(s) {
  session = s;
  $("who").textContent = s.logged_in ? "Logged in as " + s.name : "Not logged in";
  $("tracker").textContent = s.connected ? "· tracker connected" : "· " + s.state;
  $("login-section").hidden = s.logged_in;
  $("logout").hidden = !s.logged_in;
}

async function refreshSession() {
  showSession(await api("GET", "session"));
}

async function logIn(event) {
  event.preventDefault();
  const body = { name: $("login-name").value, password: $("login-password").value };
  say("login-message", "Logging in…");
  try {
    const s = await api("POST", "session/login", body);
    $("login-password").value = "";
    say("login-message", "");
    showSession(s);
    refreshFiles();
  } catch (e) {
    say("login-message", e.message, true);
  }
}

async function register() {
  const body = { name: $("login-name").value, password: $("login-password").value };
  if (!body.name || !body.password) {
    say("login-message", "Give a name and a password to register.", true);
    return;
  }
  try {
    await api("POST", "session/register", body);
    say("login-message", "Account " + body.name + " registered; now log in.");
  } catch (e) {
    say("login-message", e.message, true);
  }
}

async function logOut() {
  try {
    showSession(await api("POST", "session/logout", {}));
  } catch (e) {
    problem(e.message);
  }
}

function problem(text) {
  $("problem").textContent = text || "";
  $("problem").hidden = !text;
}

// -- search -----------------------------------------------------------------------------------

let searching = { q: "*", next: null };

async function search(event, more) {
  if (event) event.preventDefault();
  const q = more ? searching.q : $("search-q").value.trim() || "*";
  let path = "search?q=" + encodeURIComponent(q);
  if (more) path += "&after=" + encodeURIComponent(searching.next);
  say("search-message", "Searching…");
  try {
    const page = await api("GET", path);
    const body = $("results").tBodies[0];
    if (!more) body.textContent = "";
    for (const item of page.items) body.appendChild(resultRow(item));
    searching = { q: q, next: page.next };
    const shown = body.rows.length;
    $("results").hidden = shown === 0;
    $("search-more").hidden = page.next === null;
    say("search-message", shown === 0 ? "No file matches " + q + "." : shown + (shown === 1 ? " file matches " : " files match ") + q + (page.next ? " (more below)" : ""));
  } catch (e) {
    say("search-message", e.message, true);
  }
}

function resultRow(item) {
  const tr = document.createElement("tr");
  tr.dataset.name = item.name;
  tr.appendChild(el("td", item.name, "name"));
  tr.appendChild(el("td", bytes(item.size), "num"));
  tr.appendChild(el("td", item.online + " / " + item.holders, "num wide"));
  const td = el("td", null, "actions");
  td.appendChild(button("Fetch", () => startFetch(item.name), "fetch-button"));
  tr.appendChild(td);
  return tr;
}

// -- fetches ----------------------------------------------------------------------------------

async function startFetch(name) {
  say("fetch-message", "Asking the tracker for " + name + "…");
  try {
    const reply = await api("POST", "fetches", { name: name });
    say("fetch-message", reply.result && reply.result.outcome === "already" ? name + " is already in the repository." : "");
  } catch (e) {
    say("fetch-message", e.message, true);
  }
  pollNow();
}

async function cancelFetch(name) {
  try {
    await api("DELETE", "fetches/" + encodeURIComponent(name));
    say("fetch-message", "Fetch of " + name + " cancelled.");
  } catch (e) {
    say("fetch-message", e.message, true);
  }
  pollNow();
}

// One box per name, updated in place, so a poll never replaces the button a user is clicking.
const boxes = new Map();

function fetchBox(name, percent, line, state, cancellable) {
  let box = boxes.get(name);
  if (box === undefined) {
    box = el("div");
    box.dataset.name = name;
    box.appendChild(el("span", name, "name"));
    box.appendChild(button("Cancel", () => cancelFetch(name), "secondary cancel"));
    const bar = el("progress");
    bar.max = 100;
    box.appendChild(bar);
    const figures = el("span", null, "figures-line");
    figures.appendChild(el("span", null, "pct"));
    figures.appendChild(el("span", null, "line"));
    box.appendChild(figures);
    boxes.set(name, box);
  }
  box.className = "fetch " + state;
  box.querySelector(".cancel").hidden = !cancellable;
  box.querySelector("progress").value = percent;
  box.querySelector(".pct").textContent = percent.toFixed(1) + "%";
  box.querySelector(".line").textContent = " · " + line;
  return box;
}

function runningLine(f) {
  if (f.phase === "lookup") return "asking the tracker for sources";
  const parts = [bytes(f.done) + " of " + bytes(f.size), bytes(f.rate) + "/s", "ETA " + seconds(f.eta), f.sources + " source" + (f.sources === 1 ? "" : "s")];
  if (f.queued) parts.push("queued, place " + f.queued);
  if (f.phase === "piece-list") parts.unshift("getting the piece list");
  return parts.join(" · ");
}

let lastFinished = 0;

async function refreshFetches() {
  const state = await api("GET", "fetches");
  const order = [];
  const running = new Set();
  for (const f of state.fetches) {
    running.add(f.name);
    order.push(fetchBox(f.name, f.percent, runningLine(f), "running", true));
  }
  const seen = new Set(running);
  for (const p of state.paused) {
    if (seen.has(p.name)) continue;
    seen.add(p.name);
    const pct = p.pieces ? (100 * p.verified) / p.pieces : 0;
    order.push(fetchBox(p.name, pct, "paused: " + p.verified + " of " + p.pieces + " pieces kept; fetch it again to resume", "paused", true));
  }
  for (const r of state.recent.slice().reverse()) {
    if (seen.has(r.name)) continue;
    seen.add(r.name);
    if (r.outcome === "fetched" || r.outcome === "already") {
      const how = r.outcome === "already" ? "already here" : "fetched " + bytes(r.size) + " in " + seconds(r.seconds) + " from " + (r.sources.join(", ") || "no one");
      order.push(fetchBox(r.name, 100, how, "done", false));
    } else {
      order.push(fetchBox(r.name, 0, r.outcome + ": " + r.message, "failed", false));
    }
  }
  for (const [name, b] of boxes) {
    if (!seen.has(name)) {
      b.remove();
      boxes.delete(name);
    }
  }
  // Nodes move only when the order changed, so a button keeps its focus.
  const box = $("fetches");
  order.forEach((node, i) => {
    if (box.children[i] !== node) box.insertBefore(node, box.children[i] || null);
  });
  $("no-fetches").hidden = order.length > 0;
  const finished = state.recent.length ? state.recent[state.recent.length - 1].at : 0;
  if (finished !== lastFinished) {
    lastFinished = finished;
    refreshFiles();
  }
  return state.fetches.length;
}

// -- the repository ---------------------------------------------------------------------------

async function refreshFiles() {
  try {
    const reply = await api("GET", "files");
    const body = $("files").tBodies[0];
    body.textContent = "";
    for (const f of reply.files) {
      const tr = document.createElement("tr");
      tr.dataset.name = f.name;
      tr.appendChild(el("td", f.name, "name"));
      tr.appendChild(el("td", bytes(f.size), "num"));
      tr.appendChild(el("td", f.origin === "fetched" ? "fetched" : f.path, "wide name"));
      const td = el("td", null, "actions");
      td.appendChild(button("Unpublish", () => unpublish(f.name), "secondary unpublish"));
      tr.appendChild(td);
      body.appendChild(tr);
    }
    const n = reply.files.length;
    say("files-message", n + " file" + (n === 1 ? "" : "s") + " in " + reply.directory);
  } catch (e) {
    say("files-message", e.message, true);
  }
}

async function publish(event) {
  event.preventDefault();
  const body = { path: $("publish-path").value, name: $("publish-name").value };
  say("publish-message", "Hashing " + body.path + "…");
  try {
    const reply = await api("POST", "publish", body);
    say("publish-message", "Published " + reply.published.name + (reply.told ? "." : " (the tracker is told at the next login)."));
    $("publish-path").value = "";
    $("publish-name").value = "";
  } catch (e) {
    say("publish-message", e.message, true);
  }
  refreshFiles();
}

async function unpublish(name) {
  try {
    await api("POST", "unpublish", { name: name });
    say("publish-message", "Unpublished " + name + ".");
  } catch (e) {
    say("publish-message", e.message, true);
  }
  refreshFiles();
}

// -- uploads ----------------------------------------------------------------------------------

async function refreshUploads() {
  const u = await api("GET", "uploads");
  const limit = u.max === null ? "unlimited" : u.max;
  $("uploads-summary").textContent = u.active + " of " + limit + " upload slots in use, " + u.queued + " waiting; " + bytes(u.sent) + " sent in all";
  const body = $("uploads").tBodies[0];
  body.textContent = "";
  for (const c of u.connections) {
    const tr = document.createElement("tr");
    tr.appendChild(el("td", c.who, "name"));
    tr.appendChild(el("td", c.files.join(", ") || "—", "name"));
    tr.appendChild(el("td", bytes(c.sent), "num"));
    tr.appendChild(el("td", bytes(c.rate) + "/s", "num wide"));
    tr.appendChild(el("td", c.queued === null ? "sending" : c.queued, "num"));
    body.appendChild(tr);
  }
  $("uploads").hidden = u.connections.length === 0;
}

// -- polling ----------------------------------------------------------------------------------

let timer = null;
let polling = false;
let again = false;

async function poll() {
  timer = null;
  polling = true;
  let running = 0;
  try {
    const [, n] = await Promise.all([refreshSession(), refreshFetches(), refreshUploads()]);
    running = n;
    problem("");
  } catch (e) {
    problem("The peer does not answer: " + e.message);
  }
  polling = false;
  timer = window.setTimeout(poll, again ? 0 : running > 0 ? FAST : SLOW);
  again = false;
}

function pollNow() {
  // After an action: show its effect at once rather than at the next slow tick.
  if (polling) {
    again = true;
  } else if (timer !== null) {
    window.clearTimeout(timer);
    poll();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", logIn);
  $("register").addEventListener("click", register);
  $("logout").addEventListener("click", logOut);
  $("search-form").addEventListener("submit", (e) => search(e, false));
  $("search-more").addEventListener("click", () => search(null, true));
  $("publish-form").addEventListener("submit", publish);
  refreshFiles();
  poll();
});
