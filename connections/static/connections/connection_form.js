// The connection form: show the fields of the chosen auth method, and run "Test connection" /
// "Discover models" through the API without leaving the page (session cookie + CSRF token).
// The spec (fields per auth method, API URLs) comes from the page: #llmconn-connection-spec.
(function () {
  "use strict";

  var FINAL = { succeeded: true, failed: true };
  var POLL_LIMIT_MS = 120000;

  function $(sel, root) { return (root || document).querySelector(sel); }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  function init() {
    var specNode = document.getElementById("llmconn-connection-spec");
    var form = document.getElementById("connection_form");
    if (!specNode || !form) return;
    var spec = JSON.parse(specNode.textContent);
    var method = form.querySelector("[name=auth_method]");

    // -- fields of the chosen auth method -------------------------------------------------
    function rowOf(name) { return form.querySelector(".form-row.field-" + name); }
    function currentMethod() { return method ? method.value : null; }

    function toggleFields() {
      var m = currentMethod();
      Object.keys(spec.fields).forEach(function (name) {
        var row = rowOf(name);
        if (row) row.hidden = spec.fields[name].methods.indexOf(m) === -1;
      });
      form.querySelectorAll("fieldset.llmconn-config, fieldset.llmconn-credentials").forEach(function (fs) {
        var rows = fs.querySelectorAll(".form-row");
        var visible = Array.prototype.some.call(rows, function (r) { return !r.hidden && !r.classList.contains("llmconn-note"); });
        var note = fs.querySelector(".llmconn-note");
        if (fs.classList.contains("llmconn-config")) { fs.hidden = !visible; return; }
        if (!note) {
          note = el("div", "form-row llmconn-note llmconn-quiet", "This auth method needs no credentials.");
          fs.appendChild(note);
        }
        note.hidden = visible;
        var desc = fs.querySelector(".description");
        if (desc) desc.hidden = !visible;
      });
    }
    if (method) method.addEventListener("change", toggleFields);
    toggleFields();

    // -- the API --------------------------------------------------------------------------
    var csrf = form.querySelector("[name=csrfmiddlewaretoken]");
    function api(verb, url, body) {
      var headers = { "Accept": "application/json", "X-CSRFToken": csrf ? csrf.value : "" };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      return fetch(url, {
        method: verb, credentials: "same-origin", headers: headers,
        body: body === undefined ? undefined : JSON.stringify(body)
      }).then(function (resp) {
        return resp.text().then(function (text) {
          var data = null;
          try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
          if (!resp.ok) {
            var err = (data && data.error) || { message: "The server answered " + resp.status + "." };
            err.status = resp.status;
            throw err;
          }
          return data;
        });
      });
    }

    function value(name) {
      var input = form.querySelector("[name=" + name + "]");
      return input ? input.value.trim() : "";
    }

    function collect() {
      var m = currentMethod();
      var body = {
        provider: spec.provider, auth_method: m, base_url: value("base_url") || null,
        model: value("default_model"), config: {}, credentials: {}
      };
      var timeout = parseInt(value("timeout_seconds"), 10);
      if (timeout > 0) body.timeout_seconds = timeout;
      // Extra headers and the CA certificate are part of what is tested (and saved).
      var headers = value("extra_headers");
      if (headers) {
        try { body.config.extra_headers = JSON.parse(headers); } catch (e) { /* the form says */ }
      }
      if (value("ca_cert")) body.config.ca_cert = value("ca_cert");
      Object.keys(spec.fields).forEach(function (name) {
        var info = spec.fields[name];
        if (info.methods.indexOf(m) === -1) return;
        var v = value(name);
        if (!v) return;  // blank: the saved secret (with "connection"), or the default
        (info.kind === "secret" ? body.credentials : body.config)[info.name] = v;
      });
      if (spec.connection) body.connection = spec.connection;
      return body;
    }

    // -- results --------------------------------------------------------------------------
    function show(box, state, parts) {
      box.hidden = false;
      box.className = "llmconn-result" + (state ? " is-" + state : "");
      box.textContent = "";
      parts.forEach(function (p) { if (p) box.appendChild(p); });
    }
    function badge(text, kind) { return el("span", "llmconn-badge llmconn-badge--" + kind, text); }
    function progress(box, text) {
      var spin = el("span", "llmconn-spinner");
      spin.setAttribute("aria-hidden", "true");
      show(box, "", [spin, badge(text, "running")]);
    }
    function flattenFields(fields, prefix, out) {
      Object.keys(fields || {}).forEach(function (k) {
        var v = fields[k], key = prefix ? prefix + "." + k : k;
        if (Array.isArray(v)) out.push(key + ": " + v.join(" "));
        else if (v && typeof v === "object") flattenFields(v, key, out);
        else out.push(key + ": " + v);
      });
      return out;
    }
    function showError(box, err) {
      var details = flattenFields(err.fields, "", []);
      show(box, "failed", [
        badge("Not run", "failed"),
        el("span", "llmconn-message", err.message || "The request failed."),
        details.length ? el("span", "llmconn-message llmconn-quiet", details.join(" · ")) : null
      ]);
    }
    function showJob(box, job, okText) {
      if (job.status === "succeeded") {
        show(box, "ok", [
          badge(okText, "ok"),
          job.latency_ms !== null && job.latency_ms !== undefined ? el("span", "llmconn-latency", job.latency_ms + " ms") : null,
          job.model ? el("span", "llmconn-quiet", "model " + job.model) : null,
          el("span", "llmconn-message", job.message)
        ]);
      } else {
        show(box, "failed", [
          badge("Failed" + (job.error_class ? " · " + job.error_class : ""), "failed"),
          job.latency_ms !== null && job.latency_ms !== undefined ? el("span", "llmconn-latency", job.latency_ms + " ms") : null,
          el("span", "llmconn-message", job.message)
        ]);
      }
      box.setAttribute("data-status", job.status);
      box.setAttribute("data-error-class", job.error_class || "");
    }

    function poll(job, box) {
      var started = Date.now(), wait = 250;
      function step(current) {
        if (FINAL[current.status]) return Promise.resolve(current);
        if (Date.now() - started > POLL_LIMIT_MS) {
          throw { message: "Still " + current.status + " after two minutes: check that the Celery worker is running, then try again." };
        }
        progress(box, current.status === "running" ? "Running…" : "Queued…");
        return sleep(wait).then(function () {
          wait = Math.min(wait * 1.5, 2000);
          return api("GET", spec.urls.test_detail.replace("00000000-0000-0000-0000-000000000000", current.id));
        }).then(step);
      }
      return step(job);
    }

    function running(button, on) {
      button.disabled = on;
      button.setAttribute("aria-busy", on ? "true" : "false");
    }

    // A saved connection whose form is unchanged is tested as saved (its result becomes the
    // connection's status); anything else is tested as unsaved settings, with "connection" so
    // that blank secrets use the saved ones.
    function snapshot() {
      return Array.prototype.filter.call(form.elements, function (e) {
        return e.name && e.name !== "csrfmiddlewaretoken" && e.type !== "submit" &&
          e.name !== "llmconn_test_id" && e.name.indexOf("rotate__") !== 0;
      }).map(function (e) {
        return e.name + "=" + (e.type === "checkbox" ? e.checked : e.value);
      }).join("&");
    }
    var saved = snapshot();
    // The Status section after a test of the saved connection: its badge, "just now" and the
    // latency, as the page would show them after a reload.
    function updateStatus(job) {
      var holder = document.getElementById("llmconn-status");
      if (!holder) return;
      var keep = holder.querySelector(".llmconn-badge--default");
      holder.textContent = "";
      holder.appendChild(job.status === "succeeded" ? badge("OK", "ok")
        : badge("Failed" + (job.error_class ? " · " + job.error_class : ""), "failed"));
      if (keep) { holder.appendChild(document.createTextNode(" ")); holder.appendChild(keep); }
      holder.appendChild(document.createTextNode(" "));
      holder.appendChild(el("span", "llmconn-quiet", "last tested just now"));
      if (job.latency_ms !== null && job.latency_ms !== undefined) {
        holder.appendChild(document.createTextNode(" "));
        holder.appendChild(el("span", "llmconn-quiet", "· " + job.latency_ms + " ms"));
      }
      holder.setAttribute("data-status", job.status);
    }
    // Add form: a finished test of exactly these settings becomes the new connection's status
    // when it is saved (the server checks that the settings are the ones tested).
    var testIdInput = form.querySelector("[name=llmconn_test_id]");
    var testedSnapshot = null;
    function rememberTest(job) {
      if (!testIdInput || spec.connection) return;
      testIdInput.value = job.id;
      testedSnapshot = snapshot();
    }
    form.addEventListener("input", function () {
      if (testIdInput && testedSnapshot !== null && snapshot() !== testedSnapshot) {
        testIdInput.value = "";
        testedSnapshot = null;
      }
    });

    var testButton = document.getElementById("llmconn-test-button");
    var testBox = document.getElementById("llmconn-test-result");
    if (testButton) {
      testButton.addEventListener("click", function () {
        var asSaved = !!(spec.connection && spec.urls.test_saved && snapshot() === saved);
        running(testButton, true);
        progress(testBox, "Starting…");
        testBox.removeAttribute("data-status");
        testBox.setAttribute("data-mode", asSaved ? "saved" : "unsaved");
        (asSaved ? api("POST", spec.urls.test_saved, {}) : api("POST", spec.urls.tests, collect()))
          .then(function (job) { return poll(job, testBox); })
          .then(function (job) {
            showJob(testBox, job, "OK");
            if (asSaved) updateStatus(job); else rememberTest(job);
          })
          .catch(function (err) { showError(testBox, err); testBox.setAttribute("data-status", "error"); })
          .then(function () { running(testButton, false); });
      });
    }

    var discoverButton = document.getElementById("llmconn-discover-button");
    var discoverBox = document.getElementById("llmconn-discover-result");
    function updateModels(models) {
      var names = models.map(function (m) { return typeof m === "string" ? m : m.id; });
      var list = document.getElementById("id_default_model_options");
      if (list) {
        list.textContent = "";
        names.forEach(function (n) { var o = document.createElement("option"); o.value = n; list.appendChild(o); });
      }
      var chips = document.getElementById("llmconn-models-list");
      if (chips) {
        chips.textContent = "";
        chips.className = "llmconn-chips";
        names.slice(0, 40).forEach(function (n) { chips.appendChild(el("span", "llmconn-chip", n)); });
        if (!names.length) chips.appendChild(el("span", "llmconn-quiet", "No models found."));
      }
      return names;
    }
    // Discovery: of the saved connection when the form is unchanged (its model list is
    // stored), else of the settings in the form, unsaved ("kind": "discover"; blank secrets
    // use the saved ones): either way the model field's suggestions fill before saving.
    if (discoverButton) {
      discoverButton.addEventListener("click", function () {
        var asSaved = !!(spec.connection && spec.urls.discover && snapshot() === saved);
        running(discoverButton, true);
        progress(discoverBox, "Starting…");
        discoverBox.removeAttribute("data-status");
        var body = collect();
        body.kind = "discover";
        (asSaved ? api("POST", spec.urls.discover, {}) : api("POST", spec.urls.tests, body))
          .then(function (job) { return poll(job, discoverBox); })
          .then(function (job) {
            if (job.status !== "succeeded") { showJob(discoverBox, job); return null; }
            if (!asSaved) {
              var found = updateModels(job.models || []);
              showJob(discoverBox, job, "Found " + found.length + " models");
              discoverBox.setAttribute("data-status", job.status);
              return null;
            }
            return api("GET", spec.urls.models + "?page_size=500").then(function (data) {
              var models = Array.isArray(data) ? data : (data && data.results) || [];
              updateModels(models);
              showJob(discoverBox, job, "Found " + models.length + " models");
            });
          })
          .catch(function (err) { showError(discoverBox, err); discoverBox.setAttribute("data-status", "error"); })
          .then(function () { running(discoverButton, false); });
      });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
