// Filter the provider and preset cards of the "Add connection" page as you type.
(function () {
  "use strict";
  function init() {
    var input = document.getElementById("llmconn-card-filter");
    if (!input) return;
    var cards = Array.prototype.slice.call(document.querySelectorAll(".llmconn-card"));
    var none = document.getElementById("llmconn-no-match");
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase();
      var shown = 0;
      cards.forEach(function (card) {
        var match = !q || card.getAttribute("data-search").indexOf(q) !== -1;
        card.hidden = !match;
        if (match) shown += 1;
      });
      if (none) none.hidden = shown !== 0;
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
