// Draws wall time against archive size for each method, as an SVG line chart.
//
// Usage: node bench/plot.mjs OUT.svg [--methods ID,...] RESULTS.json...
//
// RESULTS are files that bench/run.mjs wrote (.bench/results-*.json). For
// each method and archive size the chart takes the median wall time of the
// latest file that measured it, so runs at several scales, or a later run of
// one method, combine into one chart.

import { readFileSync, writeFileSync } from "node:fs";

const [output, ...rest] = process.argv.slice(2);
let selectedMethods;
if (rest[0] === "--methods") {
  selectedMethods = new Set(rest[1].split(","));
  rest.splice(0, 2);
}
const inputs = rest;
if (!output || inputs.length === 0) {
  console.error(
    "usage: node bench/plot.mjs OUT.svg [--methods ID,...] RESULTS.json...",
  );
  process.exit(2);
}

/** Series by method id: archive MB to median wall seconds. */
const series = new Map();
const labels = new Map();
const files = inputs
  .map((file) => JSON.parse(readFileSync(file, "utf8")))
  .sort((a, b) => a.date.localeCompare(b.date));
for (const file of files) {
  const megabytes = file.corpus.archiveBytes / 1e6;
  for (const result of file.results) {
    if (!result.median?.wallSeconds) continue;
    if (selectedMethods && !selectedMethods.has(result.id)) continue;
    labels.set(result.id, result.label);
    const points = series.get(result.id) ?? new Map();
    points.set(megabytes, result.median.wallSeconds);
    series.set(result.id, points);
  }
}

const width = 720;
const height = 440;
const margin = { left: 64, right: 260, top: 24, bottom: 52 };
const plotWidth = width - margin.left - margin.right;
const plotHeight = height - margin.top - margin.bottom;
const allPoints = [...series.values()].flatMap((points) => [...points]);
const maxX = Math.max(...allPoints.map(([x]) => x));
const maxY = Math.max(...allPoints.map(([, y]) => y));
const niceMax = (value) => {
  const step = 10 ** Math.floor(Math.log10(value));
  return Math.ceil(value / step) * step;
};
const xMax = niceMax(maxX);
const yMax = niceMax(maxY);
const x = (value) => margin.left + (value / xMax) * plotWidth;
const y = (value) => margin.top + plotHeight - (value / yMax) * plotHeight;

const colours = [
  "#1f77b4",
  "#d62728",
  "#2ca02c",
  "#9467bd",
  "#ff7f0e",
  "#8c564b",
  "#17becf",
  "#7f7f7f",
];
const escape = (text) =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

const parts = [
  `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
  `<rect width="${width}" height="${height}" fill="white"/>`,
];
for (let i = 0; i <= 5; i++) {
  const valueX = (xMax * i) / 5;
  const valueY = (yMax * i) / 5;
  parts.push(
    `<line x1="${x(valueX)}" y1="${margin.top}" x2="${x(valueX)}" y2="${margin.top + plotHeight}" stroke="#eee"/>`,
    `<text x="${x(valueX)}" y="${margin.top + plotHeight + 16}" text-anchor="middle">${Math.round(valueX)}</text>`,
    `<line x1="${margin.left}" y1="${y(valueY)}" x2="${margin.left + plotWidth}" y2="${y(valueY)}" stroke="#eee"/>`,
    `<text x="${margin.left - 6}" y="${y(valueY) + 4}" text-anchor="end">${Math.round(valueY)}</text>`,
  );
}
parts.push(
  `<rect x="${margin.left}" y="${margin.top}" width="${plotWidth}" height="${plotHeight}" fill="none" stroke="#999"/>`,
  `<text x="${margin.left + plotWidth / 2}" y="${height - 12}" text-anchor="middle">archive size (MB)</text>`,
  `<text transform="translate(16 ${margin.top + plotHeight / 2}) rotate(-90)" text-anchor="middle">wall time (s), median</text>`,
);
[...series.entries()].forEach(([id, points], index) => {
  const colour = colours[index % colours.length];
  const sorted = [...points].sort((a, b) => a[0] - b[0]);
  const path = sorted
    .map(
      ([px, py], i) =>
        `${i === 0 ? "M" : "L"}${x(px).toFixed(1)},${y(py).toFixed(1)}`,
    )
    .join(" ");
  parts.push(
    `<path d="${path}" fill="none" stroke="${colour}" stroke-width="2"/>`,
  );
  for (const [px, py] of sorted) {
    parts.push(
      `<circle cx="${x(px).toFixed(1)}" cy="${y(py).toFixed(1)}" r="3" fill="${colour}"/>`,
    );
  }
  const legendY = margin.top + 8 + index * 18;
  parts.push(
    `<line x1="${width - margin.right + 16}" y1="${legendY}" x2="${width - margin.right + 36}" y2="${legendY}" stroke="${colour}" stroke-width="2"/>`,
    `<text x="${width - margin.right + 42}" y="${legendY + 4}">${escape(labels.get(id) ?? id)}</text>`,
  );
});
parts.push("</svg>");
writeFileSync(output, `${parts.join("\n")}\n`);
console.log(`wrote ${output}: ${series.size} methods`);
