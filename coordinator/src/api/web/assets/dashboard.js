// The dashboard's script (the CSP forbids inline ones): login, logout,
// workspace transitions, live build logs, user administration, and the web
// terminal (on xterm.js, vendored in assets/xterm/ and loaded by the
// terminal page).
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

// Runs `handler(form)` on the form's submit instead of a navigation.
function onSubmit(id, handler) {
  const form = document.getElementById(id);
  if (form) form.addEventListener("submit", (ev) => { ev.preventDefault(); handler(form); });
}

// The parameter form (/templates/T/workspace): every [data-param] input's
// value goes to the create-workspace API; coderd validates them again.
function setupCreateWithParameters() {
  onSubmit("create-ws", async (form) => {
    const err = document.getElementById("create-ws-error");
    const submit = document.getElementById("create-ws-submit");
    const rich_parameter_values = [...form.querySelectorAll("[data-param]")]
      .map((el) => ({ name: el.dataset.param, value: el.value }));
    submit.disabled = true;
    try {
      const ws = await api("POST", "/api/v2/users/me/workspaces", {
        name: document.getElementById("create-ws-name").value,
        template_id: form.dataset.templateId,
        rich_parameter_values,
      });
      location.assign("/@" + encodeURIComponent(ws.owner_name) + "/" + encodeURIComponent(ws.name));
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
      submit.disabled = false;
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
        showBuildLogs(build.id);
      } catch (e) {
        alert(e.message);
        for (const x of box.querySelectorAll("button")) x.disabled = false;
      }
    });
  }
}

// "Update": a start build on the template's active version (the API
// carries the workspace's parameter values over). On the workspace page
// its logs stream below; on the list the live state shows its progress.
function setupUpdate() {
  for (const b of document.querySelectorAll("button.update")) {
    b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        const build = await api("POST", "/api/v2/workspaces/" + b.dataset.workspaceId + "/builds",
          { transition: "start", template_version_id: b.dataset.versionId });
        showBuildLogs(build.id);
      } catch (e) {
        alert(e.message);
        b.disabled = false;
      }
    });
  }
}

// A provisioner job's logs (server-sent events from `url`) appended to
// `pre`; `data-done` gets the job's final status.
function streamLogs(pre, url) {
  const es = new EventSource(url);
  es.addEventListener("log", (ev) => {
    const l = JSON.parse(ev.data);
    pre.textContent += (l.stage ? "[" + l.stage + "] " : "") + l.output + "\n";
    pre.scrollTop = pre.scrollHeight;
  });
  es.addEventListener("end", (ev) => {
    es.close();
    pre.dataset.done = JSON.parse(ev.data).status;
  });
  return es;
}

// Streams a build's logs into `pre`, once per build.
function followLogs(pre) {
  const build = pre.dataset.buildId;
  if (pre.stream && pre.stream.build === build) return;
  if (pre.stream) pre.stream.close();
  const es = streamLogs(pre, "/api/v2/workspacebuilds/" + build + "/logs?follow=true");
  es.build = build;
  pre.stream = es;
}

// The workspace page's build log, switched to a new build.
function showBuildLogs(build) {
  const logs = document.getElementById("build-logs");
  if (!logs) return;
  logs.textContent = "";
  logs.dataset.buildId = build;
  delete logs.dataset.done;
  followLogs(logs);
}

function setupLogs() {
  const pre = document.getElementById("build-logs");
  if (pre) followLogs(pre);
}

// Live state (server-sent events from /api/v2/workspaces/…/watch): the list
// updates its rows in place; the workspace page re-renders its content when
// the workspace changes (keeping the build log that is streaming).
function badge(el, cls, text, attr) {
  el.className = "badge " + cls;
  el.textContent = text;
  if (attr) el.dataset[attr] = text;
}

// As the server's badges (pages.rs, `Badge`).
function statusClass(s) {
  return s === "running" ? "ok" : s === "failed" ? "bad" :
    ["stopped", "canceled", "deleted"].includes(s) ? "off" : "busy";
}

function lifecycleClass(s) {
  return s === "ready" ? "ok" : ["start_error", "shutdown_error"].includes(s) ? "bad" :
    ["start_timeout", "shutdown_timeout"].includes(s) ? "warn" : s === "off" ? "off" : "busy";
}

function setupLiveList() {
  const table = document.querySelector("table[data-live=list]");
  if (!table) return;
  const es = new EventSource("/api/v2/workspaces/watch");
  es.addEventListener("workspace", (ev) => {
    const w = JSON.parse(ev.data);
    const row = table.querySelector('tr[data-workspace-id="' + w.id + '"]');
    if (!row || row.dataset.outdated !== String(w.outdated)) { refreshMain(); return; }
    badge(row.querySelector("[data-status]"), statusClass(w.status), w.status, "status");
    const cell = row.lastElementChild;
    cell.textContent = "";
    for (const a of w.agents) {
      const s = document.createElement("span");
      badge(s, lifecycleClass(a.lifecycle_state), a.name + ": " + a.status + " / " + a.lifecycle_state);
      cell.append(s, " ");
    }
  });
  es.addEventListener("gone", (ev) => {
    const row = table.querySelector('tr[data-workspace-id="' + ev.data + '"]');
    if (row) row.remove();
  });
}

// The part of a workspace event that changes the page's shape (everything
// but the agents' metadata values and mesh paths, which change in place).
function workspaceShape(w) {
  return JSON.stringify(w, (k, v) => (k === "metadata" || k === "path") ? undefined : v);
}

// Metadata values and the mesh path, updated in place.
function applyAgentDetail(w) {
  for (const a of w.agents) {
    const d = a.detail;
    if (!d) continue;
    const path = document.querySelector('.mesh-path[data-agent-id="' + a.id + '"]');
    if (path && path.textContent !== d.path) path.textContent = d.path;
    const section = document.querySelector('section[data-agent="' + CSS.escape(a.name) + '"]');
    if (!section) continue;
    for (const m of d.metadata) {
      const cell = section.querySelector('tr[data-key="' + CSS.escape(m.key) + '"] td.value');
      if (!cell) continue;
      const bad = m.error !== "";
      const text = bad ? m.error : m.value === null ? "waiting for the agent's first report" : m.value;
      cell.className = "value" + (bad ? " error" : m.value === null ? " pending" : "");
      cell.textContent = text;
      cell.dataset.value = text;
    }
  }
}

function setupLiveWorkspace() {
  const box = document.getElementById("ws-actions");
  if (!box) return;
  const es = new EventSource("/api/v2/workspaces/" + box.dataset.workspaceId + "/watch");
  let last = null;
  // Whether the page shows `w` (the first event may be newer than the page).
  const shown = (w) => {
    const status = document.getElementById("ws-status");
    const box = document.getElementById("ws-actions");
    const agents = document.querySelectorAll("section[data-agent]");
    return status && box && status.dataset.status === w.status && box.dataset.buildId === w.build.id &&
      !!document.querySelector("main .outdated") === w.outdated &&
      agents.length === w.agents.length &&
      w.agents.every((a) => {
        const s = document.querySelector('section[data-agent="' + CSS.escape(a.name) + '"]');
        const logs = s && s.querySelector(".agent-logs");
        return s && s.dataset.status === a.status && s.querySelector("[data-lifecycle]").dataset.lifecycle === a.lifecycle_state &&
          (!a.detail || (logs && logs.dataset.logId === String(a.detail.log_id)));
      });
  };
  es.addEventListener("workspace", async (ev) => {
    const w = JSON.parse(ev.data);
    const shape = workspaceShape(w);
    if (last === null ? !shown(w) : last !== shape) await refreshMain();
    last = shape;
    applyAgentDetail(w);
  });
  es.addEventListener("gone", () => { es.close(); location.assign("/workspaces"); });
}

// Replaces <main> with a fresh render of this page, without reloading it.
let refreshing = null;
let refreshAgain = false;
async function refreshMain() {
  if (refreshing) { refreshAgain = true; return; }
  refreshing = (async () => {
    try {
      const r = await fetch(location.href, { credentials: "same-origin" });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const fresh = doc.querySelector("main");
      const main = document.querySelector("main");
      if (!fresh || !main) return;
      const oldLogs = document.getElementById("build-logs");
      const newLogs = fresh.querySelector("#build-logs");
      if (oldLogs && newLogs && oldLogs.dataset.buildId === newLogs.dataset.buildId) newLogs.replaceWith(oldLogs);
      // Folded blocks the viewer opened stay open.
      for (const d of main.querySelectorAll("details[id][open]")) {
        const f = fresh.querySelector("#" + CSS.escape(d.id));
        if (f) f.open = true;
      }
      main.replaceChildren(...fresh.childNodes);
      main.dataset.refreshed = String(Number(main.dataset.refreshed || 0) + 1);
      setupActions();
      setupUpdate();
      setupCreate();
      setupLogs();
      setupPorts();
      setupPromote();
      setupVersionLogs();
      setupTemplateEdit();
      setupCreateWithParameters();
      setupUsers();
    } catch (_) { /* the next event tries again */ }
  })();
  await refreshing;
  refreshing = null;
  if (refreshAgain) { refreshAgain = false; refreshMain(); }
}

// Templates: promote a version to active (template admins; the API decides).
function setupPromote() {
  for (const b of document.querySelectorAll("button.promote")) {
    b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        await api("PATCH", "/api/v2/templates/" + b.dataset.templateId + "/versions", { id: b.dataset.versionId });
        await refreshMain();
      } catch (e) {
        const err = document.getElementById("templates-error");
        err.textContent = e.message;
        err.hidden = false;
        b.disabled = false;
      }
    });
  }
}

// A template version's import logs, streamed when its block is unfolded.
function setupVersionLogs() {
  for (const d of document.querySelectorAll("details[data-version-id]")) {
    const load = () => {
      const pre = d.querySelector("pre");
      if (!d.open || pre.dataset.streaming) return;
      pre.dataset.streaming = "true";
      const es = streamLogs(pre, "/api/v2/templateversions/" + d.dataset.versionId + "/logs?follow=true");
      es.onerror = () => { es.close(); delete pre.dataset.streaming; };
    };
    d.addEventListener("toggle", load);
    load();
  }
}

// "0", "8h", "1h30m", "45s" in milliseconds; null if it is none of those.
function durationMs(text) {
  const t = text.trim();
  if (t === "0") return 0;
  const m = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(t);
  if (!m || t === "") return null;
  return ((Number(m[1] || 0) * 60 + Number(m[2] || 0)) * 60 + Number(m[3] || 0)) * 1000;
}

// The template's settings (template admins; the API decides and says why not).
function setupTemplateEdit() {
  onSubmit("template-edit", async (form) => {
    const err = document.getElementById("templates-error");
    const saved = document.getElementById("tpl-saved");
    saved.hidden = true;
    const def = durationMs(document.getElementById("tpl-default-ttl").value);
    const max = durationMs(document.getElementById("tpl-max-ttl").value);
    if (def === null || max === null) {
      err.textContent = "Durations look like 8h, 1h30m or 45m (0 for none).";
      err.hidden = false;
      return;
    }
    try {
      await api("PATCH", "/api/v2/templates/" + form.dataset.templateId, {
        display_name: document.getElementById("tpl-display-name").value,
        description: document.getElementById("tpl-description").value,
        icon: document.getElementById("tpl-icon").value,
        default_ttl_ms: def,
        max_ttl_ms: max,
      });
      err.hidden = true;
      await refreshMain();
      const s = document.getElementById("tpl-saved");
      if (s) s.hidden = false;
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
    }
  });
}

// Users (owners and user admins; the API decides): create, suspend or
// activate, edit roles. Each change re-renders the page; refusals show.
function usersError(e) {
  const err = document.getElementById("users-error");
  err.textContent = e.message;
  err.hidden = false;
}

async function userChange(method, path, body, controls) {
  for (const c of controls) c.disabled = true;
  try {
    await api(method, path, body);
    document.getElementById("users-error").hidden = true;
    await refreshMain();
    return true;
  } catch (e) {
    usersError(e);
    for (const c of controls) c.disabled = false;
    return false;
  }
}

function setupUsers() {
  const form = document.getElementById("user-create");
  if (form) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = {
        username: document.getElementById("user-create-name").value,
        email: document.getElementById("user-create-email").value,
        password: document.getElementById("user-create-password").value,
      };
      await userChange("POST", "/api/v2/users", body, [document.getElementById("user-create-submit")]);
    });
  }
  const user = (name) => "/api/v2/users/" + encodeURIComponent(name);
  for (const b of document.querySelectorAll("button.user-status")) {
    b.addEventListener("click", () =>
      userChange("PUT", user(b.dataset.user) + "/status/" + b.dataset.action, undefined, [b]));
  }
  for (const f of document.querySelectorAll("form.roles-form")) {
    f.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const roles = [...f.querySelectorAll("input[name=role]:checked")].map((i) => i.value);
      userChange("PUT", user(f.dataset.user) + "/roles", { roles }, f.querySelectorAll("button"));
    });
  }
}

// A port's sharing level: a select for whoever may change it (the
// workspace's owner, owners), up to the deployment's maximum; text otherwise.
function portShareCell(panel, port, shares, err) {
  const td = document.createElement("td");
  const current = (shares.shares.find((s) => s.agent_name === panel.dataset.agentName && s.port === port) || {}).share_level || "owner";
  if (panel.dataset.mayShare !== "true") {
    td.textContent = current;
    return td;
  }
  const levels = ["owner", "authenticated", "public"];
  const sel = document.createElement("select");
  sel.className = "port-share";
  sel.dataset.port = String(port);
  sel.setAttribute("aria-label", "Share port " + port + " with");
  for (const l of levels.slice(0, levels.indexOf(shares.max_share_level) + 1)) {
    const o = document.createElement("option");
    o.value = l;
    o.textContent = l;
    o.selected = l === current;
    sel.append(o);
  }
  sel.addEventListener("change", async () => {
    const path = "/api/v2/workspaces/" + panel.dataset.workspaceId + "/port-share";
    sel.disabled = true;
    try {
      if (sel.value === "owner") await api("DELETE", path, { agent_name: panel.dataset.agentName, port });
      else await api("POST", path, { agent_name: panel.dataset.agentName, port, share_level: sel.value });
      err.hidden = true;
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
    }
    sel.disabled = false;
  });
  td.append(sel);
  return td;
}

// The ports panel: the agent's listening ports, each one click from its dev URL.
function setupPorts() {
  for (const panel of document.querySelectorAll(".ports[data-agent-id]")) {
    const load = async () => {
      const err = panel.querySelector(".error");
      try {
        const r = await api("GET", "/api/v2/workspaceagents/" + panel.dataset.agentId + "/listening-ports");
        const shares = await api("GET", "/api/v2/workspaces/" + panel.dataset.workspaceId + "/port-share")
          .catch(() => ({ shares: [], max_share_level: "owner" }));
        const body = panel.querySelector("tbody");
        body.textContent = "";
        for (const p of r.ports) {
          const tr = document.createElement("tr");
          const a = document.createElement("a");
          a.className = "port-open button";
          a.dataset.port = String(p.port);
          a.href = panel.dataset.base + "/apps/" + p.port + "/";
          a.target = "_blank";
          a.rel = "noopener";
          a.textContent = "Open";
          for (const text of [String(p.port), p.process_name || "", (p.addresses || []).join(", ")]) {
            const td = document.createElement("td");
            td.textContent = text;
            tr.append(td);
          }
          const td = document.createElement("td");
          td.append(a);
          tr.append(td, portShareCell(panel, p.port, shares, err));
          body.append(tr);
        }
        panel.querySelector(".ports-empty").hidden = r.ports.length > 0;
        panel.dataset.loaded = "true";
        err.hidden = true;
      } catch (e) {
        err.textContent = e.message;
        err.hidden = false;
      }
    };
    panel.querySelector(".ports-refresh").addEventListener("click", load);
    load();
  }
}

// The web terminal: xterm.js on the agent's reconnecting PTY. Keystrokes,
// pastes and the terminal's size go up as JSON; output comes down as bytes.
// On every (re)connect the agent replays the shell's recent output first, so
// the screen is cleared then and the scrollback comes back intact.
let terminal = null;

// The terminal's buffer as text, one line per row (the tests read it).
function terminalText() {
  if (!terminal) return "";
  const buf = terminal.buffer.active;
  const lines = [];
  for (let i = 0; i < buf.length; i++) lines.push(buf.getLine(i).translateToString(true));
  return lines.join("\n");
}

function setupTerminal() {
  const el = document.getElementById("terminal");
  if (!el || !window.Terminal || !window.FitAddon) return;
  const status = document.getElementById("term-status");
  const url = new URL(location.href);
  let id = url.searchParams.get("reconnect");
  // A terminal app's command runs in a new shell, once (a reload or a
  // reconnect re-attaches to that shell instead).
  let command = id ? null : el.dataset.command || null;
  if (!id) {
    id = crypto.randomUUID();
    url.searchParams.set("reconnect", id);
    history.replaceState(null, "", url);
  }
  terminal = new Terminal({
    cursorBlink: true, scrollback: 10000, convertEol: false,
    fontFamily: "ui-monospace, 'DejaVu Sans Mono', Menlo, monospace", fontSize: 14,
    theme: { background: "#11151c", foreground: "#d7dde8" },
  });
  const fit = new FitAddon.FitAddon();
  terminal.loadAddon(fit);
  terminal.open(el);
  fit.fit();
  let ws = null;
  let backoff = 250;
  let connects = 0;
  function send(msg) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  }
  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const sock = new WebSocket(proto + "//" + location.host + "/api/v2/workspaceagents/" +
      el.dataset.agentId + "/pty?reconnect=" + id + "&height=" + terminal.rows + "&width=" + terminal.cols);
    sock.binaryType = "arraybuffer";
    sock.onopen = () => {
      connects += 1;
      el.dataset.connects = String(connects);
      status.textContent = "connected";
      status.dataset.state = "connected";
      backoff = 250;
      terminal.reset();
      // The shell may have been started at another size (another tab).
      send({ height: terminal.rows, width: terminal.cols });
      if (command) { send({ data: command + "\r" }); command = null; }
    };
    sock.onmessage = (ev) => terminal.write(typeof ev.data === "string" ? ev.data : new Uint8Array(ev.data));
    sock.onclose = () => {
      if (ws !== sock) return;
      status.textContent = "disconnected; reconnecting…";
      status.dataset.state = "disconnected";
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 5000);
    };
    ws = sock;
    window.coderPtySocket = sock;
  }
  terminal.onData((data) => send({ data }));
  terminal.onResize(({ rows, cols }) => send({ height: rows, width: cols }));
  window.addEventListener("resize", () => fit.fit());
  connect();
  terminal.focus();
}

setupLogin();
setupCreate();
setupCreateWithParameters();
setupLogout();
setupActions();
setupUpdate();
setupLogs();
setupLiveList();
setupLiveWorkspace();
setupPorts();
setupPromote();
setupVersionLogs();
setupTemplateEdit();
setupUsers();
setupTerminal();
