// Classic script in <head>: applies the saved (or the system's) theme before first paint.
(function () {
  var saved = null;
  try {
    saved = localStorage.getItem("levant-theme");
  } catch (e) {}
  var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = saved || (dark ? "dark" : "light");
})();
