// Live session page: one WebSocket, catch-up by sequence number, server-rendered fragments.
// Every fragment is sanitized HTML rendered by the server from the database.
(function () {
  "use strict";
  const root = document.getElementById("live-session");
  if (!root) return;

  const ACTIVE = ["queued", "running", "pausing", "stopping"];
  const header = document.getElementById("session-header");
  let status = (header && header.dataset.status) || "";

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

  // The connection, catch-up and silence check are shared with the chat page (event_socket.js).
  // A refresh fragment is applied even from an old message: it re-fetches the part as it is now.
  updateTitle();
  window.atelierEventSocket(root, {
    name: "live",
    deniedText: "You no longer have access to this session.",
    isActive: function () { return ACTIVE.includes(status); },
    replayable: function (message) { return message.fragments.some((f) => f.swap === "refresh"); },
    observe: function (message) { if (message.status) status = message.status; },
    apply: function (message) {
      message.fragments.forEach(apply);
      if (!message.live) updateTitle();
    },
  });
})();
