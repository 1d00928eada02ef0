// Chat page: one WebSocket, catch-up by sequence number, server-rendered fragments (see
// orchestration/conversations/live.py). Streaming text is appended as text, never parsed as HTML.
(function () {
  "use strict";
  const root = document.getElementById("chat");
  if (!root) return;

  let lastSeq = parseInt(root.dataset.lastSeq || "0", 10);
  let socket = null;
  let retryMs = 500;
  let active = false;
  let lastProgressAt = Date.now();
  const SILENCE_MS = 4000;
  const transcript = document.getElementById("transcript");
  const statusLine = document.getElementById("connection-status");

  function setConnection(text) { if (statusLine) statusLine.textContent = text; }

  function fromHtml(html) {
    const holder = document.createElement("div");
    holder.innerHTML = html;
    return holder.firstElementChild;
  }

  function processed(el) { if (el && window.htmx) window.htmx.process(el); return el; }

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 200;
  }

  function apply(fragment) {
    const el = fragment.id ? document.getElementById(fragment.id) : null;
    if (fragment.op === "upsert") {
      const fresh = fromHtml(fragment.html);
      if (el) el.replaceWith(fresh);
      else {
        // Messages go before any reply still streaming, so the stream stays last.
        const stream = fresh.id.startsWith("message-") ? transcript.querySelector(".chat-streaming") : null;
        transcript.insertBefore(fresh, stream);
      }
      processed(fresh);
    } else if (fragment.op === "text") {
      const body = el && el.querySelector(".stream-text");
      if (body) body.textContent += fragment.text;
    } else if (fragment.op === "settext") {
      const body = el && el.querySelector(".stream-text");
      if (body) body.textContent = fragment.text;
    } else if (fragment.op === "remove") {
      if (el) el.remove();
    } else if (fragment.op === "controls") {
      const controls = document.getElementById("chat-controls");
      const fresh = fromHtml(fragment.html);
      if (controls) { controls.replaceWith(fresh); processed(fresh); }
      active = fresh.dataset.active === "1";
    }
  }

  function handle(message) {
    if (message.type === "error") { console.warn("chat:", message.error); return; }
    if (message.type !== "events") return;
    if (message.last_seq <= lastSeq && !message.worker) return;
    const follow = nearBottom();
    message.fragments.forEach(apply);
    if (message.last_seq > lastSeq) lastProgressAt = Date.now();
    lastSeq = Math.max(lastSeq, message.last_seq);
    root.dataset.lastSeq = String(lastSeq);
    if (message.worker === "lost" && active) setConnection("Reconnecting to a worker…");
    else if (statusLine && statusLine.textContent === "Reconnecting to a worker…") setConnection("");
    if (follow) window.scrollTo(0, document.body.scrollHeight);
  }

  function askForCatchUp() {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ type: "catch_up", after: lastSeq }));
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
      try { handle(JSON.parse(event.data)); } catch (err) { console.warn("chat: bad message", err); }
    });
    socket.addEventListener("close", function (event) {
      root.dataset.connected = "false";
      if (event.code === 4403) { setConnection("You no longer have access to this conversation."); return; }
      setConnection("Reconnecting…");
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 8000);
    });
  }

  // Refusals (a plan limit: 429; a reply still streaming: 409; bad input: 400) come back as the composer
  // with the text kept and the reason shown: swap them in like a success.
  document.body.addEventListener("htmx:beforeSwap", function (event) {
    const code = event.detail.xhr.status;
    if (code === 400 || code === 409 || code === 429) { event.detail.shouldSwap = true; event.detail.isError = false; }
  });
  // Enter sends, Shift+Enter starts a new line.
  document.addEventListener("keydown", function (event) {
    if (event.target.id === "chat-text" && event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      const form = event.target.form;
      if (form && form.requestSubmit) form.requestSubmit();
    }
  });

  const controls = document.getElementById("chat-controls");
  active = controls && controls.dataset.active === "1";
  connect();
  setInterval(function () {
    if (active && Date.now() - lastProgressAt > SILENCE_MS) { lastProgressAt = Date.now(); askForCatchUp(); }
  }, 1000);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") askForCatchUp();
  });
  window.scrollTo(0, document.body.scrollHeight);
})();
