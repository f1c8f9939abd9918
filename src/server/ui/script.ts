/**
 * The little JavaScript of the console and the portal, served as /ui/app.js (see assets.ts). Every
 * page works without it; it only adds conveniences: copy buttons, and keeping a dangerous button
 * disabled until its confirmation box is ticked (the server checks the box either way).
 */
export const APP_JS = `"use strict";
(function () {
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source || !navigator.clipboard) return;
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        var label = button.textContent;
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = label; }, 1500);
      });
    });
  });
  document.querySelectorAll("[data-requires]").forEach(function (button) {
    var box = document.getElementById(button.getAttribute("data-requires"));
    if (!box) return;
    var sync = function () { button.disabled = !box.checked; };
    box.addEventListener("change", sync);
    sync();
  });
})();
`;
