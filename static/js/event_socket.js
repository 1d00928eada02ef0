// The live page's and the chat page's shared connection: one WebSocket per page, catch-up by sequence
// number, reconnect with backoff, and the silence check. Each page supplies how to apply a message.
//
// Channels delivers at most once: a full channel drops messages silently, and a gap is only noticed
// when a later message arrives. So while the run is active, a page that has heard no new event for
// SILENCE_MS asks the server for everything after its last sequence (catch-up), and it asks again
// whenever the tab comes back into view. The answer says whether a worker is driving the run; if none
// is (it died and the watchdog is handing the run to another), the page says so.
(function () {
  "use strict";
  const SILENCE_MS = 4000;
  const WORKER_HINT = "Reconnecting to a worker…";

  // root: the element carrying data-ws-path and data-last-seq.
  // page: {name: "live" | "chat", deniedText, isActive(): bool, observe(message) (optional, sees every
  //        message first), apply(message): applies message.fragments,
  //        replayable(message): bool (apply it even though it carries nothing new)}
  window.atelierEventSocket = function (root, page) {
    let lastSeq = parseInt(root.dataset.lastSeq || "0", 10);
    let socket = null;
    let retryMs = 500;
    let reconnectTimer = null;
    let lastProgressAt = Date.now();
    let lastAskedAt = 0;
    const statusLine = document.getElementById("connection-status");

    function setConnection(text) { if (statusLine) statusLine.textContent = text; }

    function askForCatchUp() {
      if (!socket || socket.readyState !== WebSocket.OPEN) return false;
      lastAskedAt = Date.now();
      socket.send(JSON.stringify({ type: "catch_up", after: lastSeq }));
      return true;
    }

    function showWorker(state) {
      const lost = state === "lost" && page.isActive();
      root.dataset.worker = lost ? "lost" : "live";
      if (lost) setConnection(WORKER_HINT);
      else if (statusLine && statusLine.textContent === WORKER_HINT) setConnection("");
    }

    function checkSilence() {
      if (!page.isActive()) { showWorker("idle"); return; }
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

    function handle(message) {
      if (message.type === "error") { console.warn(page.name + ":", message.error); return; }
      if (message.type !== "events") return;
      if (page.observe) page.observe(message);  // e.g. the session's status, read by isActive()
      if (message.worker) showWorker(message.worker);
      if (message.live) {  // streamed text not saved yet: shown now, carries no new sequence number
        page.apply(message);
        lastProgressAt = Date.now();
        return;
      }
      const fresh = message.last_seq > lastSeq;
      if (!fresh && !page.replayable(message)) return;
      page.apply(message);
      if (fresh) {
        lastProgressAt = Date.now();
        if (!message.worker) showWorker("live");  // events are flowing again
      }
      lastSeq = Math.max(lastSeq, message.last_seq);
      root.dataset.lastSeq = String(lastSeq);
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
        try { handle(JSON.parse(event.data)); } catch (err) { console.warn(page.name + ": bad message", err); }
      });
      socket.addEventListener("close", function (event) {
        root.dataset.connected = "false";
        if (event.code === 4403) { setConnection(page.deniedText); return; }
        setConnection("Reconnecting…");
        reconnectTimer = setTimeout(function () { reconnectTimer = null; connect(); }, retryMs);
        retryMs = Math.min(retryMs * 2, 8000);
      });
    }

    connect();
    setInterval(checkSilence, 1000);
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible") recheckNow();
    });
    window.addEventListener("focus", recheckNow);
    return { askForCatchUp: askForCatchUp };
  };
})();
