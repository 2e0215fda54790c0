// Gatekeeper dashboard: auto-refresh of live sections and the confirmation dialogs. No dependencies.
//
// A refresh never replaces a section wholesale: it morphs the DOM in place, so the element that
// has keyboard focus, and whatever a screen reader is reading, stay the same nodes. Rows carry a
// data-key (or an id), so a row that moves or disappears never hands its focused button to
// another row's call. A section with anything typed in it is left alone until the text is sent
// or cleared, and nothing refreshes while a confirmation dialog is open.
(function () {
  "use strict";
  var REFRESH_MS = window.gatekeeperRefreshMs || 5000;  // tests shorten it with an init script

  function busy(section) {
    var fields = section.querySelectorAll("input:not([type=hidden]), textarea, select");
    for (var i = 0; i < fields.length; i++) {
      var field = fields[i];
      if (field.tagName === "SELECT" ? field.selectedIndex > 0 : field.value) return true;
    }
    return document.querySelector("dialog[open]") !== null;
  }

  function keyOf(node) {
    if (node.nodeType !== 1) return null;
    return node.getAttribute("data-key") || node.id || null;
  }

  function sameKind(a, b) {
    return a.nodeType === b.nodeType && a.nodeName === b.nodeName && keyOf(a) === keyOf(b);
  }

  function syncAttributes(from, to) {
    for (var i = from.attributes.length - 1; i >= 0; i--) {
      var name = from.attributes[i].name;
      if (!to.hasAttribute(name) && name !== "open") from.removeAttribute(name);
    }
    for (var j = 0; j < to.attributes.length; j++) {
      var attr = to.attributes[j];
      if (from.getAttribute(attr.name) !== attr.value) from.setAttribute(attr.name, attr.value);
    }
  }

  function morph(from, to) {
    if (from.nodeType === 3 || from.nodeType === 8) {
      if (from.nodeValue !== to.nodeValue) from.nodeValue = to.nodeValue;
      return;
    }
    syncAttributes(from, to);
    morphChildren(from, to);
  }

  function morphChildren(from, to) {
    var keyed = {};
    Array.prototype.forEach.call(from.childNodes, function (child) {
      var key = keyOf(child);
      if (key) keyed[key] = child;
    });
    var cursor = from.firstChild;
    Array.prototype.slice.call(to.childNodes).forEach(function (next) {
      var key = keyOf(next);
      var match = key ? keyed[key] || null : (cursor && !keyOf(cursor) && sameKind(cursor, next) ? cursor : null);
      if (match && !sameKind(match, next)) match = null;
      if (!match) {
        from.insertBefore(next, cursor);
        return;
      }
      if (key) delete keyed[key];
      if (match === cursor) cursor = cursor.nextSibling;
      else from.insertBefore(match, cursor);
      morph(match, next);
    });
    while (cursor) {
      var after = cursor.nextSibling;
      from.removeChild(cursor);
      cursor = after;
    }
  }

  function announce(section) {
    var summary = section.querySelector("[data-summary]");
    var live = document.querySelector("[data-announce]");
    if (!summary || !live) return;
    var text = summary.textContent.trim();
    if (section.dataset.summary !== undefined && section.dataset.summary !== text) live.textContent = text;
    section.dataset.summary = text;
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
        var template = document.createElement("template");
        template.innerHTML = html;
        morphChildren(section, template.content);
        announce(section);
        section.dispatchEvent(new CustomEvent("gatekeeper:refreshed", {bubbles: true}));
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

  function returnFocus(event) {
    // Back on the button that opened the dialog, as a keyboard user expects.
    var dialog = event.target;
    if (!dialog || dialog.tagName !== "DIALOG" || !dialog.id) return;
    var opener = document.querySelector("[data-dialog='" + dialog.id + "']");
    if (opener) opener.focus();
  }

  document.addEventListener("click", openDialog);
  document.addEventListener("click", closeDialog);
  document.addEventListener("close", returnFocus, true);  // `close` does not bubble: catch it on the way down
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(function (section) {
      announce(section);
      window.setInterval(function () { refresh(section); }, REFRESH_MS);
    });
  });
})();
