// carecoord web UI: progressive enhancement only; every page works without JavaScript.
// After a form's redirect, move keyboard focus to the message so screen readers and keyboard users
// land on the outcome of what they just did.
document.addEventListener("DOMContentLoaded", function () {
  var flash = document.querySelector("[data-testid='flash']");
  if (flash) {
    flash.setAttribute("tabindex", "-1");
    flash.focus();
  }
});
