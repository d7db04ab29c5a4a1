// The dashboard's only script (the CSP forbids inline ones): login, logout,
// workspace transitions, live build logs, and the web terminal.
"use strict";

function csrf() {
  const m = document.querySelector('meta[name="csrf-token"]');
  return m ? m.content : "";
}

async function api(method, path, body) {
  const headers = { "X-CSRF-Token": csrf() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { const e = await r.json(); msg = e.message + (e.detail ? " " + e.detail : ""); } catch (_) {}
    throw new Error(msg);
  }
  return r.status === 204 ? null : r.json().catch(() => null);
}

function setupLogin() {
  const form = document.getElementById("login");
  if (!form) return;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const login = document.getElementById("login-name").value;
    const password = document.getElementById("login-password").value;
    const err = document.getElementById("login-error");
    const body = login.includes("@") ? { email: login, password } : { username: login, password };
    try {
      await api("POST", "/api/v2/users/login", body);
      location.assign(form.dataset.redirect || "/workspaces");
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
    }
  });
}

function setupCreate() {
  const form = document.getElementById("create");
  if (!form) return;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = document.getElementById("create-name").value;
    const err = document.getElementById("create-error");
    try {
      const ws = await api("POST", "/api/v2/users/me/workspaces",
        { name, template_id: document.getElementById("create-template").value });
      location.assign("/@" + encodeURIComponent(ws.owner_name) + "/" + encodeURIComponent(ws.name));
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
    }
  });
}

function setupLogout() {
  const b = document.getElementById("logout");
  if (!b) return;
  b.addEventListener("click", async () => {
    try { await api("POST", "/api/v2/users/logout"); } finally { location.assign("/login"); }
  });
}

function setupActions() {
  const box = document.querySelector(".actions[data-workspace-id]");
  if (!box) return;
  for (const b of box.querySelectorAll("button.transition")) {
    b.addEventListener("click", async () => {
      const t = b.dataset.transition;
      if (t === "delete" && !confirm("Delete this workspace and its resources?")) return;
      for (const x of box.querySelectorAll("button")) x.disabled = true;
      try {
        const build = await api("POST", "/api/v2/workspaces/" + box.dataset.workspaceId + "/builds", { transition: t });
        const logs = document.getElementById("build-logs");
        logs.textContent = "";
        logs.dataset.buildId = build.id;
        followLogs(logs, () => location.reload());
      } catch (e) {
        alert(e.message);
        for (const x of box.querySelectorAll("button")) x.disabled = false;
      }
    });
  }
}

// Streams a build's logs (server-sent events); `done` runs after the end event.
function followLogs(pre, done) {
  const es = new EventSource("/api/v2/workspacebuilds/" + pre.dataset.buildId + "/logs?follow=true");
  es.addEventListener("log", (ev) => {
    const l = JSON.parse(ev.data);
    pre.textContent += (l.stage ? "[" + l.stage + "] " : "") + l.output + "\n";
    pre.scrollTop = pre.scrollHeight;
  });
  es.addEventListener("end", (ev) => {
    es.close();
    const job = JSON.parse(ev.data);
    pre.dataset.done = job.status;
    if (done) done();
  });
}

// A build in progress reloads the page when it ends; agents still starting
// reload it every two seconds, so status and lifecycle stay current.
function setupLogs() {
  const pre = document.getElementById("build-logs");
  if (!pre) return;
  const active = pre.dataset.active === "true";
  followLogs(pre, active ? () => location.reload() : null);
  if (!active && document.querySelector("[data-settling]")) setTimeout(() => location.reload(), 2000);
}

// Terminal output is rendered as text: escape sequences are dropped, carriage
// returns and backspaces are applied to the current line.
const ANSI = /\x1b(\[[0-9;?]*[ -\/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>78DEHMc])/g;

const screen = { lines: [""], col: 0 };

function render(term, text) {
  const L = screen.lines;
  for (const ch of text.replace(ANSI, "")) {
    const row = L.length - 1;
    if (ch === "\n") { L.push(""); screen.col = 0; }
    else if (ch === "\r") { screen.col = 0; }
    else if (ch === "\b") { screen.col = Math.max(0, screen.col - 1); }
    else if (ch < " " && ch !== "\t") { /* other controls: ignored */ }
    else {
      const line = L[row].padEnd(screen.col, " ");
      L[row] = line.slice(0, screen.col) + ch + line.slice(screen.col + 1);
      screen.col += 1;
    }
  }
  if (L.length > 2000) L.splice(0, L.length - 2000);
  term.textContent = L.join("\n");
  term.scrollTop = term.scrollHeight;
}

function setupTerminal() {
  const term = document.getElementById("terminal");
  if (!term) return;
  const status = document.getElementById("term-status");
  const url = new URL(location.href);
  let id = url.searchParams.get("reconnect");
  if (!id) {
    id = crypto.randomUUID();
    url.searchParams.set("reconnect", id);
    history.replaceState(null, "", url);
  }
  const decoder = new TextDecoder();
  let ws = null;
  let backoff = 250;
  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(proto + "//" + location.host + "/api/v2/workspaceagents/" + term.dataset.agentId +
      "/pty?reconnect=" + id + "&height=24&width=100");
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { status.textContent = "connected"; status.dataset.state = "connected"; backoff = 250; screen.lines = [""]; screen.col = 0; term.textContent = ""; };
    ws.onmessage = (ev) => render(term, typeof ev.data === "string" ? ev.data : decoder.decode(ev.data, { stream: true }));
    ws.onclose = () => {
      status.textContent = "disconnected; reconnecting…";
      status.dataset.state = "disconnected";
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 5000);
    };
  }
  function send(data) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ data }));
  }
  const keys = { Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b",
    ArrowUp: "\x1b[A", ArrowDown: "\x1b[B", ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D" };
  term.addEventListener("keydown", (ev) => {
    let data = null;
    if (ev.ctrlKey && ev.key.length === 1) data = String.fromCharCode(ev.key.toUpperCase().charCodeAt(0) & 31);
    else if (keys[ev.key]) data = keys[ev.key];
    else if (ev.key.length === 1 && !ev.metaKey) data = ev.key;
    if (data !== null) { ev.preventDefault(); send(data); }
  });
  term.addEventListener("paste", (ev) => { ev.preventDefault(); send(ev.clipboardData.getData("text")); });
  connect();
  term.focus();
}

setupLogin();
setupCreate();
setupLogout();
setupActions();
setupLogs();
setupTerminal();
