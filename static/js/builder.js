// Session builder: small touches on top of htmx. No inline scripts (CSP), no eval.
(function () {
  "use strict";

  function status(text) {
    var el = document.getElementById("save-status");
    if (el) el.textContent = text;
  }

  // Once Start is pressed (it posts the whole form itself), a delayed autosave that fires
  // afterwards would reach a running session and be refused; drop those.
  var starting = false;
  document.addEventListener("htmx:confirm", function (event) {
    var path = event.detail.path || "";
    if (/\/start\/$/.test(path)) { starting = true; return; }
    if (starting && event.detail.verb === "post") event.preventDefault();
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var path = (event.detail.requestConfig && event.detail.requestConfig.path) || "";
    var xhr = event.detail.xhr;
    // A refused start (problems shown in place) keeps the builder editable; only a redirect ends it.
    if (/\/start\/$/.test(path) && !(xhr && xhr.getResponseHeader("HX-Redirect"))) starting = false;
  });

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
