// Workspace bindings: when a role's connection changes, its model suggestions (a <datalist>)
// become that connection's discovered models, and the placeholder names its default model.
// Free text stays allowed. Data: #llmconn-binding-models (active shared connections, and
// "provider:NAME" for each provider's default connection, with its id as `connection`).
(function () {
  "use strict";
  var data = {};
  function init() {
    var node = document.getElementById("llmconn-binding-models");
    if (!node) return;
    data = JSON.parse(node.textContent).connections || {};
    document.querySelectorAll("input.llmconn-model-input").forEach(function (input) {
      var role = input.getAttribute("data-role");
      var select = document.getElementById("id_" + role + "_connection");
      var list = document.getElementById(input.getAttribute("list"));
      if (!select || !list) return;
      var initialOptions = list.innerHTML;
      function refresh(first) {
        var info = data[select.value];
        if (!select.value) {
          if (!first) list.innerHTML = initialOptions;
          input.placeholder = "the system default's model";
          return;
        }
        if (!info) return;  // an inactive connection: keep what the page rendered
        list.textContent = "";
        info.models.forEach(function (m) {
          var o = document.createElement("option");
          o.value = m;
          list.appendChild(o);
        });
        input.placeholder = info.default_model ? "default: " + info.default_model : "the connection's default model";
      }
      select.addEventListener("change", function () { refresh(false); });
      refresh(true);
      addDiscover(input, select, list);
    });
  }

  // "Discover": ask the chosen connection's provider for its models now (an unsaved discovery,
  // "kind": "discover", with the connection's stored secrets) and offer them as suggestions.
  var FINAL = { succeeded: true, failed: true };
  function addDiscover(input, select, list) {
    var spec = JSON.parse(document.getElementById("llmconn-binding-models").textContent);
    if (!spec.urls) return;
    var csrf = document.querySelector("[name=csrfmiddlewaretoken]");
    var button = document.createElement("button");
    button.type = "button";
    button.className = "button llmconn-discover";
    button.textContent = "Discover";
    button.setAttribute("data-role", input.getAttribute("data-role"));
    var note = document.createElement("span");
    note.className = "llmconn-quiet llmconn-discover-note";
    input.insertAdjacentElement("afterend", note);
    input.insertAdjacentElement("afterend", button);
    function api(verb, url, body) {
      return fetch(url, {
        method: verb, credentials: "same-origin",
        headers: { "Accept": "application/json", "Content-Type": "application/json",
                   "X-CSRFToken": csrf ? csrf.value : "" },
        body: body === undefined ? undefined : JSON.stringify(body)
      }).then(function (r) {
        return r.json().then(function (data) {
          if (!r.ok) throw (data && data.error) || { message: "The server answered " + r.status + "." };
          return data;
        });
      });
    }
    function poll(job, waited) {
      if (FINAL[job.status]) return Promise.resolve(job);
      if (waited > 120000) throw { message: "No result after two minutes: is the worker running?" };
      return new Promise(function (r) { setTimeout(r, 400); }).then(function () {
        return api("GET", spec.urls.test_detail.replace("00000000-0000-0000-0000-000000000000", job.id));
      }).then(function (next) { return poll(next, waited + 400); });
    }
    button.addEventListener("click", function () {
      if (!select.value) { note.textContent = "Choose a connection first."; return; }
      // "provider:NAME" (a provider-string binding) discovers with that provider's default.
      var chosen = data[select.value] && data[select.value].connection || select.value;
      if (chosen.indexOf("provider:") === 0) {
        note.textContent = "This provider has no default connection yet.";
        return;
      }
      button.disabled = true;
      note.textContent = "Discovering…";
      note.removeAttribute("data-status");
      api("POST", spec.urls.tests, { kind: "discover", connection: chosen })
        .then(function (job) { return poll(job, 0); })
        .then(function (job) {
          note.setAttribute("data-status", job.status);
          if (job.status !== "succeeded") { note.textContent = "Failed: " + job.message; return; }
          list.textContent = "";
          (job.models || []).forEach(function (m) {
            var o = document.createElement("option");
            o.value = m;
            list.appendChild(o);
          });
          var info = data[select.value];
          if (info) info.models = job.models || [];
          note.textContent = (job.models || []).length + " models found.";
        })
        .catch(function (err) { note.setAttribute("data-status", "error"); note.textContent = err.message || "Failed."; })
        .then(function () { button.disabled = false; });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
