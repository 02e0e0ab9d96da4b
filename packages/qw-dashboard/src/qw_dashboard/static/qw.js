// qw dashboard: live regions and a confirm() on destructive forms. Nothing else.
//
// Every element with data-live="URL" has its content replaced, every
// body[data-refresh] milliseconds, by the fragment that URL answers (the same
// markup the full page renders there). body[data-live-ticks] counts the
// refreshes that succeeded; body[data-live-ok] is set after the first one.
(function () {
  "use strict";

  function refreshAll() {
    var regions = document.querySelectorAll("[data-live]");
    var jobs = Array.prototype.map.call(regions, function (el) {
      return fetch(el.getAttribute("data-live"), {
        credentials: "same-origin",
        headers: { "X-Requested-With": "qw-live" },
        cache: "no-store",
      }).then(function (response) {
        // A redirect (to /login, say) is not this region's markup.
        if (!response.ok || response.redirected) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      }).then(function (html) {
        // Server-rendered and escaped there; scripts in innerHTML never run.
        el.innerHTML = html;
      });
    });
    return Promise.all(jobs);
  }

  function start() {
    var body = document.body;
    var every = parseInt(body.getAttribute("data-refresh") || "0", 10);
    if (!every || !document.querySelector("[data-live]")) {
      return;
    }
    function tick() {
      refreshAll().then(function () {
        var ticks = parseInt(body.getAttribute("data-live-ticks") || "0", 10) + 1;
        body.setAttribute("data-live-ticks", String(ticks));
        body.setAttribute("data-live-ok", "");
        body.removeAttribute("data-live-error");
      }, function (err) {
        body.setAttribute("data-live-error", String(err && err.message || err));
      }).then(function () {
        // The next refresh waits for this one: never two in flight.
        window.setTimeout(tick, every);
      });
    }
    window.setTimeout(tick, every);
  }

  // Delegated, so that forms inside refreshed regions keep it.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
