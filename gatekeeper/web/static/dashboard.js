// Gatekeeper dashboard: auto-refresh of live sections and the confirmation dialogs. No dependencies.
(function () {
  "use strict";
  var REFRESH_MS = 5000;

  function busy(section) {
    // Never replace what a person is typing into or has focused.
    var active = document.activeElement;
    if (active && section.contains(active) && active.matches("input, textarea, select, button")) return true;
    var fields = section.querySelectorAll("input:not([type=hidden]), textarea, select");
    for (var i = 0; i < fields.length; i++) if (fields[i].value) return true;
    return document.querySelector("dialog[open]") !== null;
  }

  function refresh(section) {
    if (document.hidden || busy(section)) return;
    fetch(section.dataset.refresh, {credentials: "same-origin", cache: "no-store",
                                    headers: {"X-Requested-With": "fetch"}})
      .then(function (response) {
        if (response.redirected) { window.location.reload(); return null; }  // signed out meanwhile
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null || busy(section)) return;
        section.innerHTML = html;
        var stamp = document.querySelector("[data-refreshed-at]");
        if (stamp) stamp.textContent = new Date().toISOString().replace("T", " ").slice(0, 19) + " UTC";
      })
      .catch(function () { /* the next tick tries again */ });
  }

  function openDialog(event) {
    var button = event.target.closest("[data-dialog]");
    if (!button || button.disabled) return;
    var dialog = document.getElementById(button.dataset.dialog);
    if (dialog && dialog.showModal) {
      dialog.showModal();
      var reason = dialog.querySelector("textarea");
      if (reason) reason.focus();
    }
  }

  function closeDialog(event) {
    var button = event.target.closest("[data-close]");
    if (!button) return;
    var dialog = button.closest("dialog");
    if (dialog) { dialog.querySelector("form").reset(); dialog.close(); }
  }

  document.addEventListener("click", openDialog);
  document.addEventListener("click", closeDialog);
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(function (section) {
      window.setInterval(function () { refresh(section); }, REFRESH_MS);
    });
  });
})();
