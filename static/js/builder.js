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

  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    if (!target || !target.querySelector) return;
    // After an error re-render, move focus to the first invalid field so keyboard users land there.
    if (target.id === "estimate" || target.id === "threshold-field") return;
    var invalid = target.querySelector(".field-error input, .field-error select, .field-error textarea");
    if (invalid) {
      invalid.focus();
      status("Not saved: fix the highlighted fields.");
    } else if (document.getElementById("save-status").textContent === "Saving…") {
      status("Saved.");
    }
  });
})();
