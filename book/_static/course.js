// Course site behaviour (book/_static/course.js): click a figure to see it large.
// No network, no library: an overlay with the same image; click or Escape closes it.
(function () {
  "use strict";
  function close() {
    var box = document.querySelector(".course-lightbox");
    if (box) { box.remove(); }
  }
  function open(img) {
    close();
    var box = document.createElement("div");
    box.className = "course-lightbox";
    box.setAttribute("role", "dialog");
    box.setAttribute("aria-label", "Enlarged figure (click or press Escape to close)");
    var big = document.createElement("img");
    big.src = img.currentSrc || img.src;
    big.alt = img.alt;
    box.appendChild(big);
    box.addEventListener("click", close);
    document.body.appendChild(box);
  }
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") { close(); } });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("figure img, div.cell_output img").forEach(function (img) {
      var link = img.closest("a");
      // Sphinx links a scaled image to its file (a.image-reference): open it here
      // instead; any other link around an image keeps its target
      if (link && !link.classList.contains("image-reference")) { return; }
      img.title = img.title || "Click to enlarge";
      img.addEventListener("click", function (e) { e.preventDefault(); open(img); });
    });
  });
})();
