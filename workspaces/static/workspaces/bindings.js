// Workspace bindings: when a role's connection changes, its model suggestions (a <datalist>)
// become that connection's discovered models, and the placeholder names its default model.
// Free text stays allowed. Data: #llmconn-binding-models (active connections only).
(function () {
  "use strict";
  function init() {
    var node = document.getElementById("llmconn-binding-models");
    if (!node) return;
    var data = JSON.parse(node.textContent).connections || {};
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
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
