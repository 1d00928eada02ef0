// Document panel: copy the working document's Markdown to the clipboard.
// Delegated from the document so it keeps working after htmx or WebSocket swaps of the panel.
(function () {
  "use strict";
  if (window.atelierDocuments) return; // the panel may be included more than once per page
  window.atelierDocuments = true;

  function fallbackCopy(text) {
    // Older browsers and non-secure origins have no async clipboard: copy through a temporary textarea.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "copy-buffer";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (e) {
      ok = false;
    }
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () {
        return fallbackCopy(text);
      });
    }
    return fallbackCopy(text);
  }

  function announce(button, message) {
    var panel = button.closest("[data-testid=document-panel]") || document;
    var status = panel.querySelector("[data-copy-status]");
    var label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    button.textContent = message;
    if (status) status.textContent = message;
    window.setTimeout(function () {
      button.textContent = label;
      if (status) status.textContent = "";
    }, 2000);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-source]");
    if (!button) return;
    var source = document.querySelector(button.dataset.copySource);
    if (!source) return;
    copyText(source.value !== undefined ? source.value : source.textContent).then(
      function () { announce(button, "Copied"); },
      function () { announce(button, "Copy failed: select the text and copy it by hand"); }
    );
  });
})();
