// Hover on figures: each .frame[data-hover] names a JSON block of [x, y, label] points, x and y as fractions of the
// image (0,0 = top left). The nearest point within RADIUS pixels of the pointer is shown in the tooltip.
(function () {
  "use strict";
  var RADIUS = 12;
  var tooltip = document.getElementById("tooltip");
  document.querySelectorAll(".frame[data-hover]").forEach(function (frame) {
    var points = JSON.parse(document.getElementById(frame.dataset.hover).textContent);
    var img = frame.querySelector("img");
    var marker = document.createElement("div");
    marker.className = "marker";
    marker.hidden = true;
    frame.appendChild(marker);
    function hide() { tooltip.hidden = true; marker.hidden = true; }
    frame.addEventListener("mouseleave", hide);
    frame.addEventListener("mousemove", function (event) {
      var box = img.getBoundingClientRect();
      var best = null, bestDistance = RADIUS * RADIUS;
      for (var i = 0; i < points.length; i++) {
        var dx = points[i][0] * box.width - (event.clientX - box.left);
        var dy = points[i][1] * box.height - (event.clientY - box.top);
        var distance = dx * dx + dy * dy;
        if (distance <= bestDistance) { best = points[i]; bestDistance = distance; }
      }
      if (best === null) { hide(); return; }
      tooltip.textContent = best[2];
      tooltip.hidden = false;
      tooltip.style.left = (event.clientX + 14) + "px";
      tooltip.style.top = (event.clientY + 14) + "px";
      marker.hidden = false;
      marker.style.left = (best[0] * box.width) + "px";
      marker.style.top = (best[1] * box.height) + "px";
    });
  });
})();
