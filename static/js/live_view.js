// Live session page, how it reads: phone tabs, folded turns that stay folded, following the streaming card.
// live.js applies the server's fragments; this file only arranges what is on screen. No inline code (CSP).
(function () {
  "use strict";
  const root = document.getElementById("live-session");
  if (!root) return;
  const layout = document.getElementById("live-layout");
  const rounds = document.getElementById("rounds");
  const followButton = document.querySelector("[data-testid=follow-live]");

  // --- Tabs (phones): one panel at a time. On wide screens CSS shows both side by side.
  const tabs = document.querySelector("[data-testid=live-tabs]");
  function selectTab(name) {
    layout.dataset.tab = name;
    tabs.querySelectorAll("[role=tab]").forEach(function (tab) {
      tab.setAttribute("aria-selected", tab.dataset.tab === name ? "true" : "false");
    });
    updateFollowButton();
  }
  if (tabs && layout) {
    tabs.hidden = false;
    layout.classList.add("has-tabs");
    tabs.addEventListener("click", function (event) {
      const tab = event.target.closest("[role=tab]");
      if (tab) selectTab(tab.dataset.tab);
    });
  }

  // --- Folding: a card re-rendered by a push (turn finished) keeps the state the user gave it.
  const folded = new Set();
  const tools = document.querySelector("[data-testid=transcript-tools]");
  if (tools) tools.hidden = false;
  document.addEventListener("toggle", function (event) {
    const fold = event.target;
    if (!fold.classList || !fold.classList.contains("turn-fold")) return;
    const card = fold.closest("[data-turn-id]");
    if (!card) return;
    // Read the state now, not the event's: a re-rendered card fires "toggle" for its initial open
    // attribute after restoreFolds() has closed it again.
    if (fold.open) folded.delete(card.dataset.turnId); else folded.add(card.dataset.turnId);
  }, true);
  function restoreFolds() {
    folded.forEach(function (id) {
      const fold = document.querySelector("#turn-" + id + " > .turn-fold");
      if (fold && fold.open) fold.open = false;
    });
  }
  if (tools) {
    tools.addEventListener("click", function (event) {
      const button = event.target.closest("[data-fold]");
      if (!button) return;
      const open = button.dataset.fold === "open";
      document.querySelectorAll("#rounds .turn-fold").forEach(function (fold) {
        // The card being written stays open: that is where the text appears.
        if (!open && fold.closest("[data-status=streaming]")) return;
        fold.open = open;
      });
    });
  }

  // --- Following the streaming card: keep its end in view while it grows, unless the user scrolled away.
  let follow = true;
  function streamingCard() {
    return document.querySelector("#rounds [data-testid=turn][data-status=streaming]");
  }
  function transcriptShown() {
    return !layout.classList.contains("has-tabs") || layout.dataset.tab !== "document" ||
      window.getComputedStyle(document.getElementById("live-transcript")).display !== "none";
  }
  function cardEndInView(card) {
    const box = card.getBoundingClientRect();
    return box.bottom <= window.innerHeight + 60 && box.bottom >= 0;
  }
  function updateFollowButton() {
    if (!followButton) return;
    followButton.hidden = follow || !streamingCard() || !transcriptShown();
  }
  function keepInView() {
    const card = streamingCard();
    if (!follow || !card || !transcriptShown()) { updateFollowButton(); return; }
    const box = card.getBoundingClientRect();
    if (box.bottom > window.innerHeight) window.scrollBy(0, box.bottom - window.innerHeight + 16);
    updateFollowButton();
  }
  // Our own scrolling leaves the card's end in view, so only the user's scrolling can turn following off.
  window.addEventListener("scroll", function () {
    const card = streamingCard();
    if (card) follow = cardEndInView(card);
    updateFollowButton();
  }, { passive: true });
  if (followButton) {
    followButton.addEventListener("click", function () {
      follow = true;
      if (layout.classList.contains("has-tabs")) selectTab("transcript");
      keepInView();
    });
  }

  if (rounds && window.MutationObserver) {
    let queued = false;
    new MutationObserver(function () {
      restoreFolds();  // at once, before the re-rendered card is ever painted open
      if (queued) return;
      queued = true;
      window.requestAnimationFrame(function () {
        queued = false;
        keepInView();
      });
    }).observe(rounds, { childList: true, subtree: true, characterData: true });
  }
  // --- While a turn streams: the active-time clock runs, and the totals say what is being written.
  // The server renders both (header partial); this only moves them forward between its renders.
  function tick() {
    const clock = document.querySelector("[data-active-seconds]");
    if (clock && clock.dataset.runningSince) {
      const base = parseInt(clock.dataset.activeSeconds || "0", 10);
      const since = Date.parse(clock.dataset.runningSince);
      if (!isNaN(since)) clock.textContent = label(base + Math.max(0, Math.round((Date.now() - since) / 1000)));
    }
  }
  function label(seconds) {
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    const pad = function (n) { return (n < 10 ? "0" : "") + n; };
    if (h) return h + "h " + pad(m) + "m";
    if (m) return m + "m " + pad(s) + "s";
    return s + "s";
  }
  // A rough count while text arrives (about four characters a token); the real usage replaces it
  // when the turn ends and the server re-renders the totals.
  function liveTotals() {
    const tokens = document.querySelector("[data-testid=tokens-live]");
    const credits = document.querySelector("[data-testid=credits-live]");
    let chars = 0, streaming = 0;
    document.querySelectorAll("#rounds [data-testid=turn][data-status=streaming] [data-testid=turn-body]")
      .forEach(function (body) { streaming += 1; chars += body.textContent.length; });
    if (tokens) {
      tokens.hidden = !streaming;
      tokens.textContent = streaming ? "+≈" + Math.ceil(chars / 4).toLocaleString() + " being written" : "";
    }
    if (credits) credits.hidden = !streaming;
  }
  if (rounds && window.MutationObserver) {
    new MutationObserver(liveTotals).observe(rounds, { childList: true, subtree: true, characterData: true });
  }
  const header = document.getElementById("live-session");
  if (header && window.MutationObserver) {
    // The header is replaced whole by pushes: refresh the live parts in it at once.
    new MutationObserver(function () { liveTotals(); tick(); }).observe(header, { childList: true });
  }
  liveTotals();
  tick();
  setInterval(tick, 1000);
  updateFollowButton();
})();
