"use strict";
// Shared by the review pages. Every text from the data goes through textContent, never through HTML.
const REPORT = JSON.parse(document.getElementById("report-data").textContent);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function image(uri, alt) {
  if (typeof uri !== "string" || !uri.startsWith("data:image/")) return element("span", "no-image", "no image");
  const img = element("img");
  img.src = uri;
  img.alt = alt;
  img.loading = "lazy";
  return img;
}

function fixed(value, digits) {
  return value === null || value === undefined ? "" : Number(value).toFixed(digits);
}

function probabilityBars(classes, probs) {
  const bars = element("div", "bars");
  if (!probs) return bars;
  const top = probs.indexOf(Math.max(...probs));
  classes.forEach((name, index) => {
    bars.append(element("span", "name", name));
    const bar = element("div", "bar");
    const fill = element("div", index === top ? "fill top" : "fill");
    fill.style.width = (100 * Math.min(1, Math.max(0, probs[index]))).toFixed(1) + "%";
    bar.append(fill);
    bars.append(bar, element("span", "value", fixed(probs[index], 3)));
  });
  return bars;
}
