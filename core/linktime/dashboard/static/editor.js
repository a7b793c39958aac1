// The workflow editor, enhanced: steps are added, moved and removed in the page (without JS
// those buttons post the draft and the server answers the same), the variable picker inserts
// a field at the cursor, and leaving with unsaved changes asks first.
(function () {
  "use strict";
  var form = document.getElementById("editor");
  if (!form) return;
  var chain = document.getElementById("chain");
  var addCard = document.getElementById("add-step");
  var addSelect = document.getElementById("add_action");
  var count = document.getElementById("step-count");
  var maxSteps = parseInt(form.dataset.maxSteps || "5", 10);

  // -- unsaved changes -----------------------------------------------------------------------
  // A draft the server re-rendered (after Test, or an add without JS) is unsaved too.
  var dirty = form.dataset.unsaved === "true";
  var submitting = false;
  var touch = function () { dirty = true; };
  form.addEventListener("input", touch);
  form.addEventListener("change", touch);
  form.addEventListener("submit", function (event) {
    // One post per click: a double click must not send the draft twice.
    if (submitting) { event.preventDefault(); return; }
    submitting = true;
    dirty = false;
  });
  // Back from another page can restore this one as it was: allow posting again.
  window.addEventListener("pageshow", function () { submitting = false; });
  window.addEventListener("beforeunload", function (event) {
    if (!dirty) return;
    event.preventDefault();
    event.returnValue = "";
  });

  // -- trigger: the offset only for time triggers, with the right wording ----------------------
  var trigger = document.getElementById("trigger");
  var offset = document.getElementById("offset-field");
  if (trigger && offset) {
    var help = document.getElementById("offset-help");
    var syncOffset = function () {
      var option = trigger.options[trigger.selectedIndex];
      var isTime = option && option.dataset.kind === "time";
      offset.hidden = !isTime;
      offset.querySelectorAll("input, select").forEach(function (el) { el.disabled = !isTime; });
      if (isTime && help) {
        help.textContent = option.dataset.direction === "-1"
          ? "before the meeting starts" : "after the meeting ends";
      }
    };
    trigger.addEventListener("change", syncOffset);
    syncOffset();
  }

  // -- steps ---------------------------------------------------------------------------------
  var steps = function () { return Array.prototype.slice.call(chain.querySelectorAll(":scope > li.step-item")); };

  // Give a step card the names and ids of position `to` (fields are steps.N.…, ids steps-N-…).
  var ATTRS = ["name", "id", "for", "aria-describedby", "aria-labelledby", "data-for", "href"];
  var renumber = function (card, to) {
    var from = card.dataset.index;
    if (from === String(to)) return;
    var swaps = [
      [new RegExp("^step-" + from + "$"), "step-" + to],
      [new RegExp("(^|\\s|#)steps\\." + from + "\\."), "$1steps." + to + "."],
      [new RegExp("(^|\\s|#)steps-" + from + "-", "g"), "$1steps-" + to + "-"],
    ];
    [card].concat(Array.prototype.slice.call(card.querySelectorAll("*"))).forEach(function (el) {
      ATTRS.forEach(function (attr) {
        var value = el.getAttribute(attr);
        if (value === null) return;
        swaps.forEach(function (s) { value = value.replace(s[0], s[1]); });
        el.setAttribute(attr, value);
      });
      if (el.name !== "op") return;
      // "up:1", "fallback:1": the step's index; "cond:steps.1.when:remove:0": its prefix.
      if (/^(up|down|remove|fallback):\d+$/.test(el.value)) el.value = el.value.replace(/:\d+$/, ":" + to);
      else el.value = el.value.replace(/^cond:steps\.\d+\./, "cond:steps." + to + ".");
    });
    card.querySelectorAll(".step-n").forEach(function (n) { n.textContent = String(to + 1); });
    card.dataset.index = String(to);
  };

  var refresh = function () {
    var all = steps();
    all.forEach(function (card, i) {
      renumber(card, i);
      var up = card.querySelector("button[value^='up:']");
      var down = card.querySelector("button[value^='down:']");
      if (up) up.disabled = i === 0;
      if (down) down.disabled = i === all.length - 1;
    });
    if (count) count.textContent = String(all.length);
    var actions = all.filter(function (card) { return card.dataset.logic !== "true"; }).length;
    var actionCount = document.getElementById("action-count");
    if (actionCount) actionCount.textContent = String(actions);
    if (addCard) {
      addCard.hidden = all.length >= maxSteps;
      var addButton = addCard.querySelector("button[value='add']");
      if (addButton) addButton.disabled = actions >= parseInt(addCard.dataset.maxActions || "5", 10);
    }
    var none = document.getElementById("no-steps");
    if (none) none.hidden = all.length > 0;
  };

  steps().forEach(function (card, i) { card.dataset.index = String(i); });

  form.addEventListener("click", function (event) {
    var button = event.target.closest("button[name='op']");
    if (!button) return;
    var op = button.value.split(":");
    var card = button.closest("li.step-item");
    if (op[0] === "add") {
      var adding = button.value.slice(4) || addSelect.value; // "add:logic.delay", or the choice
      var template = document.querySelector("template.step-template[data-action='" + adding + "']");
      if (!template || steps().length >= maxSteps) return; // the server says why
      event.preventDefault();
      var fresh = template.content.firstElementChild.cloneNode(true);
      fresh.dataset.index = "0";
      chain.appendChild(fresh);
      refresh();
      var first = fresh.querySelector("input:not([type=hidden]), select, textarea");
      if (first) first.focus();
    } else if (card && (op[0] === "up" || op[0] === "down")) {
      event.preventDefault();
      var other = op[0] === "up" ? card.previousElementSibling : card.nextElementSibling;
      if (!other || !other.classList.contains("step-item")) return;
      if (op[0] === "up") chain.insertBefore(card, other); else chain.insertBefore(other, card);
      refresh();
      button.focus();
    } else if (card && op[0] === "remove") {
      event.preventDefault();
      var next = card.nextElementSibling || card.previousElementSibling;
      card.remove();
      refresh();
      var focusable = next && next.querySelector("summary");
      (focusable || addSelect || form).focus();
    } else {
      return;
    }
    touch();
  });

  // -- logic: a delay's two ways, a fallback's form, a condition's operators and value --------
  form.addEventListener("change", function (event) {
    var el = event.target;
    if (el.classList.contains("delay-mode")) {
      var card = el.closest("fieldset");
      card.querySelector(".delay-for").hidden = el.value === "until";
      card.querySelector(".delay-until").hidden = el.value !== "until";
    } else if (el.classList.contains("fallback-action")) {
      // Its settings form comes from the server: post the draft (kept whole) to show it.
      var apply = el.closest(".fallback").querySelector(".fallback-apply");
      if (apply) apply.click();
    } else if (el.classList.contains("cond-field") || el.classList.contains("cond-op")) {
      syncCondition(el.closest(".cond-row"), el.classList.contains("cond-field"));
    }
  });
  var OP_WORDS = { eq: "is", ne: "is not", "in": "is one of", not_in: "is none of", contains: "contains",
    starts_with: "starts with", exists: "is set", gt: "is more than", gte: "is at least",
    lt: "is less than", lte: "is at most", before: "is before", after: "is after" };
  // The operators of the field's type, and a value input that fits it.
  var syncCondition = function (row, fieldChanged) {
    var picked = row.querySelector(".cond-field");
    var option = picked.options[picked.selectedIndex];
    var type = option.dataset.type || "";
    var opSelect = row.querySelector(".cond-op");
    if (fieldChanged && option.dataset.ops) {
      var keep = opSelect.value;
      opSelect.innerHTML = "";
      option.dataset.ops.split(" ").forEach(function (op) {
        opSelect.add(new Option(OP_WORDS[op] + " (" + op + ")", op, false, op === keep));
      });
    }
    row.querySelector(".cond-key").hidden = type !== "custom";
    var op = opSelect.value;
    var old = row.querySelector(".cond-value select, .cond-value input");
    var control;
    if (op === "exists" || type === "boolean") {
      control = document.createElement("select");
      ["true", "false"].forEach(function (v) { control.add(new Option(v, v, false, old.value === v)); });
    } else {
      control = document.createElement("input");
      var numeric = op !== "in" && op !== "not_in" &&
        (type === "number" || (type === "custom" && /^(gt|gte|lt|lte)$/.test(op)));
      control.type = numeric ? "number" : "text";
      if (numeric) control.step = "any";
      control.placeholder = op === "in" || op === "not_in" ? "comma-separated values"
        : type === "time" ? "2026-12-01T15:00:00Z" : "";
      control.value = old.tagName === "SELECT" ? "" : old.value;
    }
    ["id", "name", "aria-describedby", "aria-invalid"].forEach(function (attr) {
      if (old.hasAttribute(attr)) control.setAttribute(attr, old.getAttribute(attr));
    });
    old.replaceWith(control);
  };

  // -- "send a test to me": Enter in its fields sends the test (the form's default is Save) --
  var sendPanel = document.getElementById("send-test-panel");
  if (sendPanel) {
    sendPanel.addEventListener("keydown", function (event) {
      var button = document.getElementById("send-test-button");
      if (event.key !== "Enter" || event.target.tagName !== "INPUT" || !button) return;
      event.preventDefault();
      button.click();
    });
  }

  // -- the variable picker: one list, opened beside the message field in use; each field a
  // button inserting {{ name }} at the cursor ------------------------------------------------
  var picker = document.getElementById("var-picker");
  var pickerHome = picker && picker.parentNode;
  var pickerNext = picker && picker.nextSibling;
  var insert = function (area, text) {
    var start = area.selectionStart, end = area.selectionEnd;
    area.value = area.value.slice(0, start) + text + area.value.slice(end);
    area.focus();
    area.setSelectionRange(start + text.length, start + text.length);
    area.dispatchEvent(new Event("input", { bubbles: true }));
  };
  var addOpeners = function (root) {
    root.querySelectorAll(".picker-slot").forEach(function (slot) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "link picker-open";
      button.setAttribute("aria-expanded", "false");
      button.setAttribute("aria-controls", "var-picker");
      button.textContent = "Insert a booking field";
      slot.appendChild(button);
    });
  };
  // The picker goes home (under the chain) before the card holding it is removed.
  var sendPickerHome = function () {
    if (!picker) return;
    pickerHome.insertBefore(picker, pickerNext);
    picker.open = false;
    picker.dataset.for = "";
    document.querySelectorAll(".picker-open").forEach(function (b) { b.setAttribute("aria-expanded", "false"); });
  };
  if (picker) {
    picker.querySelectorAll("code[data-var]").forEach(function (code) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "link var-insert";
      button.dataset.var = code.dataset.var;
      button.appendChild(code.cloneNode(true));
      code.replaceWith(button);
    });
    addOpeners(document);
    document.querySelectorAll("template.step-template").forEach(function (t) { addOpeners(t.content); });
  }
  var lastField = "";
  form.addEventListener("focusin", function (event) {
    var id = event.target.id;
    if (id && document.querySelector(".picker-slot[data-for='" + id + "']")) lastField = id;
  });
  form.addEventListener("click", function (event) {
    var opener = event.target.closest("button.picker-open");
    if (opener && picker) {
      var slot = opener.closest(".picker-slot");
      var here = slot.nextElementSibling === picker && picker.open;
      sendPickerHome();
      if (here) return;
      slot.after(picker);
      picker.dataset.for = slot.dataset.for;
      picker.open = true;
      opener.setAttribute("aria-expanded", "true");
      return;
    }
    var button = event.target.closest("button.var-insert");
    if (!button) return;
    var area = document.getElementById(picker.dataset.for || lastField);
    if (area) insert(area, "{{ " + button.dataset.var + " }}");
  });
  form.addEventListener("click", function (event) {
    // Before editor.js's remove handler takes the card away (capture: runs first).
    var button = event.target.closest("button[name='op'][value^='remove:']");
    var card = button && button.closest("li.step-item");
    if (card && picker && card.contains(picker)) sendPickerHome();
  }, true);
})();
