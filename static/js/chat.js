// Chat page: one WebSocket, catch-up by sequence number, server-rendered fragments (see
// orchestration/conversations/live.py). Streaming text is appended as text, never parsed as HTML.
(function () {
  "use strict";
  const root = document.getElementById("chat");
  if (!root) return;

  let active = false;
  const transcript = document.getElementById("transcript");

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
  // The connection, catch-up and silence check are shared with the live session page (event_socket.js).
  window.atelierEventSocket(root, {
    name: "chat",
    deniedText: "You no longer have access to this conversation.",
    isActive: function () { return active; },
    replayable: function (message) { return Boolean(message.worker); },
    apply: function (message) {
      const follow = nearBottom();
      message.fragments.forEach(apply);
      if (follow) window.scrollTo(0, document.body.scrollHeight);
    },
  });
  window.scrollTo(0, document.body.scrollHeight);
})();
