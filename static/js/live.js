// Live session page: one WebSocket, catch-up by sequence number, server-rendered fragments.
// Every fragment is sanitized HTML rendered by the server from the database.
(function () {
  "use strict";
  const root = document.getElementById("live-session");
  if (!root) return;

  let lastSeq = parseInt(root.dataset.lastSeq || "0", 10);
  let socket = null;
  let retryMs = 500;
  let reconnectTimer = null;
  const statusLine = document.getElementById("connection-status");

  function setConnection(text) { if (statusLine) statusLine.textContent = text; }

  // Channels delivers at most once: a full channel drops messages silently, and a gap is only
  // noticed when a later message arrives. So while the run is active, a page that has heard no new
  // event for SILENCE_MS asks the server for everything after its last sequence (catch-up), and it
  // asks again whenever the tab comes back into view. The answer says whether a worker is driving
  // the session; if none is (it died and the watchdog is handing the run to another), say so.
  const ACTIVE = ["queued", "running", "pausing", "stopping"];
  const SILENCE_MS = 4000;
  const WORKER_HINT = "Reconnecting to a worker…";
  const header = document.getElementById("session-header");
  let status = (header && header.dataset.status) || "";
  let lastProgressAt = Date.now();
  let lastAskedAt = 0;

  function askForCatchUp() {
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    lastAskedAt = Date.now();
    socket.send(JSON.stringify({ type: "catch_up", after: lastSeq }));
    return true;
  }

  function showWorker(state) {
    const lost = state === "lost" && ACTIVE.includes(status);
    root.dataset.worker = lost ? "lost" : "live";
    if (lost) setConnection(WORKER_HINT);
    else if (statusLine && statusLine.textContent === WORKER_HINT) setConnection("");
  }

  function checkSilence() {
    if (!ACTIVE.includes(status)) { showWorker("idle"); return; }
    const now = Date.now();
    if (now - lastProgressAt >= SILENCE_MS && now - lastAskedAt >= SILENCE_MS) askForCatchUp();
  }

  function recheckNow() {
    if (askForCatchUp()) return;
    if (reconnectTimer !== null && socket && socket.readyState === WebSocket.CLOSED) {
      clearTimeout(reconnectTimer);
      reconnectTimer = null;
      connect();
    }
  }

  function updateTitle() {
    const header = document.getElementById("session-header");
    const label = header ? header.dataset.statusLabel : root.dataset.status;
    document.title = label + " · " + root.dataset.title + " · Atelier";
  }

  function ensureRound(fragment) {
    let group = document.getElementById("round-" + fragment.round);
    if (group) return group.querySelector(".round-turns");
    const empty = document.getElementById("rounds-empty");
    if (empty) empty.remove();
    const holder = document.createElement("div");
    holder.innerHTML = fragment.round_html;
    group = holder.firstElementChild;
    const rounds = document.getElementById("rounds");
    // Keep rounds in order even if a late fragment arrives.
    const later = Array.from(rounds.children).find(
      (el) => parseInt(el.dataset.round || "0", 10) > fragment.round);
    rounds.insertBefore(group, later || null);
    return group.querySelector(".round-turns");
  }

  // Parallel calls (editors, critics) share one group of columns in their round.
  function ensureGroup(container, fragment) {
    let group = document.getElementById(fragment.group);
    if (!group) {
      const holder = document.createElement("div");
      holder.innerHTML = fragment.group_html;
      group = holder.firstElementChild;
      container.appendChild(group);
    }
    return group.querySelector(".parallel-columns");
  }

  function replaceOuter(el, html) {
    const holder = document.createElement("div");
    holder.innerHTML = html;
    const fresh = holder.firstElementChild;
    // A re-rendered card keeps the parts the reader opened (the reasoning panel starts collapsed).
    el.querySelectorAll("details[open][id]").forEach(function (open) {
      const again = fresh.querySelector("#" + CSS.escape(open.id));
      if (again) again.open = true;
    });
    el.replaceWith(fresh);
    return fresh;
  }

  function apply(fragment) {
    const el = document.getElementById(fragment.target);
    if (fragment.swap === "inner") {
      if (el) el.innerHTML = fragment.html;
    } else if (fragment.swap === "outer") {
      if (el) replaceOuter(el, fragment.html);
    } else if (fragment.swap === "upsert") {
      // Earlier attempts of this call now live folded inside its card ("attempt 3 of 3").
      (fragment.replaces || []).forEach(function (id) {
        const stale = document.getElementById(id);
        if (stale) stale.remove();
      });
      if (el) { replaceOuter(el, fragment.html); }
      else {
        let container = ensureRound(fragment);
        if (fragment.group) container = ensureGroup(container, fragment);
        const holder = document.createElement("div");
        holder.innerHTML = fragment.html;
        container.appendChild(holder.firstElementChild);
      }
    } else if (fragment.swap === "refresh") {
      refresh(fragment);
    }
  }

  // Parts with forms (CSRF) are fetched over HTTP as the user, not pushed.
  // One request per target at a time; a refresh asked for meanwhile runs once the first has swapped.
  // (htmx.ajax without a source shares one queue on <body> where the last request wins, so the
  // document panel's refresh used to silently drop the controls' refresh sent in the same batch.)
  const refreshing = {};
  function refresh(fragment) {
    const id = fragment.target;
    if (refreshing[id]) { refreshing[id] = "again"; return; }
    const el = document.getElementById(id);
    if (!el || !window.htmx) return;
    refreshing[id] = "busy";
    // ignoreTitle: the fetched page's <title> (e.g. "Document · …") must not replace the live status title.
    window.htmx.ajax("GET", fragment.url, {
      source: el, target: el, select: "#" + id, swap: "outerHTML ignoreTitle:true",
    }).finally(function () {
      const again = refreshing[id] === "again";
      delete refreshing[id];
      if (again) refresh(fragment);
    });
  }

  function handle(message) {
    if (message.type === "error") { console.warn("live:", message.error); return; }
    if (message.type !== "events") return;
    if (message.status) status = message.status;
    if (message.worker) showWorker(message.worker);
    if (message.live) {  // streamed text not saved yet: shown now, carries no new sequence number
      message.fragments.forEach(apply);
      lastProgressAt = Date.now();
      return;
    }
    if (message.last_seq <= lastSeq && message.fragments.every((f) => f.swap !== "refresh")) return;
    message.fragments.forEach(apply);
    if (message.last_seq > lastSeq) {
      lastProgressAt = Date.now();
      if (!message.worker) showWorker("live");  // events are flowing again
    }
    lastSeq = Math.max(lastSeq, message.last_seq);
    root.dataset.lastSeq = String(lastSeq);
    updateTitle();
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + root.dataset.wsPath);
    socket.addEventListener("open", function () {
      retryMs = 500;
      setConnection("");
      root.dataset.connected = "true";
      askForCatchUp();
    });
    socket.addEventListener("message", function (event) {
      try { handle(JSON.parse(event.data)); } catch (err) { console.warn("live: bad message", err); }
    });
    socket.addEventListener("close", function (event) {
      root.dataset.connected = "false";
      if (event.code === 4403) { setConnection("You no longer have access to this session."); return; }
      setConnection("Reconnecting…");
      reconnectTimer = setTimeout(function () { reconnectTimer = null; connect(); }, retryMs);
      retryMs = Math.min(retryMs * 2, 8000);
    });
  }

  // The active-time clock and the live totals are in live_view.js (display only).
  updateTitle();
  connect();
  setInterval(checkSilence, 1000);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") recheckNow();
  });
  window.addEventListener("focus", recheckNow);
})();
