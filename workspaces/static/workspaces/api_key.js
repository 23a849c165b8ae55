// "Copy" on the page that shows a new API key once.
(function () {
  "use strict";
  function init() {
    var button = document.getElementById("llmconn-copy-key");
    var input = document.getElementById("llmconn-new-key");
    if (!button || !input) return;
    input.addEventListener("focus", function () { input.select(); });
    button.addEventListener("click", function () {
      input.select();
      var done = function () { button.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(input.value).then(done, function () {});
      else { try { document.execCommand("copy"); done(); } catch (e) { /* select() leaves it ready to copy */ } }
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
