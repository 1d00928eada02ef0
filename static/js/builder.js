// Session builder: small touches on top of htmx. No inline scripts (CSP), no eval.
(function () {
  "use strict";

  function status(text) {
    var el = document.getElementById("save-status");
    if (el) el.textContent = text;
  }

  // Show that an autosave is in flight; the server's reply replaces this text.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    if (elt && elt.closest && elt.closest("#builder") && event.detail.requestConfig.verb === "post") {
      status("Saving…");
    }
  });

  document.addEventListener("htmx:responseError", function () {
    status("Could not save. Check your connection and try again.");
  });
  document.addEventListener("htmx:sendError", function () {
    status("Could not reach the server. Your changes are still in the form.");
  });

  // The server's reply says whether a part saved (an out-of-band #save-status). After a swap, the
  // swapped element (event.detail.target) is the OLD one; look up its replacement by id before reading it.
  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    if (!target || !target.id) return;
    if (target.id === "estimate" || target.id === "threshold-field") return;
    var fresh = document.getElementById(target.id) || target;
    // After an error re-render, move focus to the first invalid field so keyboard users land there.
    var invalid = fresh.querySelector && fresh.querySelector(".field-error input, .field-error select, .field-error textarea");
    if (invalid) invalid.focus();
  });

  // A reply that carried no status of its own (team and reference changes) must not leave "Saving…" behind.
  document.addEventListener("htmx:afterSettle", function (event) {
    var config = event.detail.requestConfig;
    if (!config || config.verb !== "post") return;
    var el = document.getElementById("save-status");
    if (el && el.textContent === "Saving…") status("");
  });
})();
