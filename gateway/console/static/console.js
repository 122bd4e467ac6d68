// Arbiter console: draws every chart a page declares. An element
// <div class="chart" data-chart="ID"> names a <script type="application/json" id="ID">
// holding {kind: "time" | "category", x: [...], labels: [...] (category),
// percent: true|false, series: [{label, values: [number | null]}]}.
// After drawing, the element carries data-points (points per series) and
// data-series (number of series) so that tests can tell a chart was drawn with data.
(function () {
  "use strict";

  var PALETTE = ["#1f6feb", "#d9480f", "#2f9e44", "#9c36b5", "#e8590c", "#0c8599",
                 "#c2255c", "#5c940d", "#364fc7", "#862e9c", "#a61e4d", "#087f5b"];

  function share(value) {
    return value == null ? "\u2013" : (100 * value).toFixed(1) + " %";
  }

  function options(spec, width) {
    var category = spec.kind === "category";
    var series = [{
      label: category ? "bucket" : "time",
      value: category ? function (u, i) { return i == null ? "\u2013" : spec.labels[i]; }
                      : undefined
    }];
    spec.series.forEach(function (s, i) {
      series.push({
        label: s.label,
        stroke: PALETTE[i % PALETTE.length],
        width: 2,
        spanGaps: false,
        points: {show: true, size: 5},
        value: function (u, v) { return spec.percent ? share(v) : (v == null ? "\u2013" : v); }
      });
    });
    var xAxis = {};
    if (category) {
      xAxis.splits = function () { return spec.x; };
      xAxis.values = function (u, splits) {
        var step = Math.max(1, Math.ceil(splits.length / 12));
        return splits.map(function (i, n) { return n % step === 0 ? spec.labels[i] : ""; });
      };
    }
    var yAxis = spec.percent ? {
      values: function (u, splits) {
        return splits.map(function (v) { return (100 * v).toFixed(0) + " %"; });
      }
    } : {};
    return {
      width: width,
      height: 260,
      series: series,
      axes: [xAxis, yAxis],
      scales: {
        x: category ? {time: false, range: [-0.5, spec.x.length - 0.5]}
          : spec.x.length === 1 ? {time: true, auto: false, min: spec.x[0] - 60,
                                   max: spec.x[0] + 60}
          : {time: true},
        y: spec.percent ? {range: [0, 1]} : {}
      },
      cursor: {drag: {x: false, y: false}}
    };
  }

  function draw(element) {
    var source = document.getElementById(element.getAttribute("data-chart"));
    if (!source || typeof uPlot === "undefined") {
      return;
    }
    var spec = JSON.parse(source.textContent);
    var data = [spec.x].concat(spec.series.map(function (s) { return s.values; }));
    var width = Math.max(320, element.clientWidth || 800);
    var chart = new uPlot(options(spec, width), data, element);
    element.setAttribute("data-points", String(spec.x.length));
    element.setAttribute("data-series", String(spec.series.length));
    window.addEventListener("resize", function () {
      chart.setSize({width: Math.max(320, element.clientWidth || 800), height: 260});
    });
  }

  document.querySelectorAll("[data-chart]").forEach(draw);
})();
