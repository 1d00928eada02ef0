// Small progressive enhancements shared by every page. Page-specific code lives in its own file.
(function () {
  "use strict";

  // Buttons and links with data-confirm ask before doing something destructive.
  document.addEventListener("click", function (event) {
    var target = event.target.closest ? event.target.closest("[data-confirm]") : null;
    if (target && !window.confirm(target.getAttribute("data-confirm"))) {
      event.preventDefault();
      event.stopPropagation();
    }
  }, true);

  // Phone navigation: keep aria-expanded in sync with the CSS checkbox toggle, close on Escape.
  function initNavToggle() {
    var toggle = document.getElementById("nav-toggle");
    if (!toggle) return;
    var sync = function () { toggle.setAttribute("aria-expanded", toggle.checked ? "true" : "false"); };
    toggle.addEventListener("change", sync);
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && toggle.checked) { toggle.checked = false; sync(); }
    });
    sync();
  }

  // Move keyboard focus to the first field with an error so it is announced and easy to fix.
  function focusFirstError() {
    var invalid = document.querySelector("main [aria-invalid='true']");
    if (invalid && typeof invalid.focus === "function") invalid.focus();
  }

  function init() { initNavToggle(); focusFirstError(); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
