// LinkTime dashboard: small progressive enhancements; every page works without them.
document.addEventListener("DOMContentLoaded", function () {
  // The error summary is read first; its links move focus to the field, not only the view.
  var summary = document.getElementById("error-summary");
  if (summary) {
    summary.focus();
    summary.querySelectorAll("a[href^='#']").forEach(function (link) {
      link.addEventListener("click", function (event) {
        var target = document.getElementById(link.getAttribute("href").slice(1));
        if (!target) return;
        event.preventDefault();
        var details = target.closest("details");
        if (details) details.open = true;
        target.scrollIntoView({ block: "center" });
        target.focus();
      });
    });
  }
  // Copy buttons: the value stays selectable without JS; with it, one click copies it.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var input = document.getElementById(button.dataset.copy);
    var status = document.getElementById(button.dataset.copy + "-copied");
    if (!input) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      function said(copied) {
        if (status) status.textContent = copied ? "Copied" : "Select the text and copy it";
      }
      input.select();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(
          function () { said(true); },
          function () { said(document.execCommand("copy")); }
        );
      } else {
        said(document.execCommand("copy"));
      }
    });
  });
  // Ask before destructive forms.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
});

// Times are shown in the browser's zone until the account chooses one (Account page).
(function () {
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && document.cookie.indexOf("linktime_tz=" + encodeURIComponent(zone)) === -1) {
      document.cookie = "linktime_tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; samesite=lax";
    }
  } catch (e) { /* no Intl: UTC */ }
})();
