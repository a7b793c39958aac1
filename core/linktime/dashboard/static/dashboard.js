// LinkTime dashboard: small progressive enhancements; every page works without them.
document.addEventListener("DOMContentLoaded", function () {
  // The offset input only for time triggers (Before/After Meeting), with the right wording.
  var trigger = document.getElementById("trigger");
  var offset = document.getElementById("offset-field");
  if (trigger && offset) {
    var input = offset.querySelector("input");
    var help = document.getElementById("offset-help");
    var sync = function () {
      var option = trigger.options[trigger.selectedIndex];
      var isTime = option && option.dataset.kind === "time";
      offset.hidden = !isTime;
      input.disabled = !isTime;
      if (isTime && help) {
        help.textContent = option.dataset.direction === "-1"
          ? "minutes before the meeting starts"
          : "minutes after the meeting ends";
      }
    };
    trigger.addEventListener("change", sync);
    sync();
  }
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
