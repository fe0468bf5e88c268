// The results page: filter, sort and page through REPORT.rows; only one page of rows is in the document.
// Each row names its results file (REPORT.sources[row.source]) when the page holds several; an image that
// changed after its answer (row.image === "changed") is shown only when asked for, labelled as the current file.
// An ok row of a model with sets shows its prediction set (row.set: its classes; [] an empty set, said in words).
const PAGE_SIZE = 100;
const rows = REPORT.rows;
const classes = REPORT.classes;
const sources = REPORT.sources;
const controls = {
  status: document.getElementById("filter-status"),
  klass: document.getElementById("filter-class"),
  source: document.getElementById("filter-source"),  // only on a page of several results files
  set: document.getElementById("filter-set"),  // only on a page whose results have prediction sets
  image: document.getElementById("filter-image"),
  confidence: document.getElementById("min-confidence"),
  sort: document.getElementById("sort"),
  search: document.getElementById("search"),
};
const body = document.querySelector("#rows tbody");
const shown = document.getElementById("shown");
const hasOverlayColumn = document.getElementById("rows").dataset.explained === "yes";
const hasSourceColumn = sources.length > 1;
let matching = [];
let page = 0;
let selected = -1;

function compareBy(key) {
  const byPath = (a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : a.source - b.source);
  const missingLast = (field, direction) => (a, b) => {
    const x = a[field], y = b[field];
    if (x === null && y === null) return byPath(a, b);
    if (x === null) return 1;
    if (y === null) return -1;
    return direction * (x - y) || byPath(a, b);
  };
  if (key === "confidence-desc") return missingLast("confidence", -1);
  if (key === "confidence-asc") return missingLast("confidence", 1);
  if (key === "ood-desc") return missingLast("ood", -1);
  if (key === "status") return (a, b) => (a.status < b.status ? -1 : a.status > b.status ? 1 : byPath(a, b));
  return byPath;
}

// The set filter's values: "1", "2+" or "0" (empty); a row without a set matches none of them.
function setMatches(size, wanted) {
  if (size === null) return false;
  return wanted === "2+" ? size >= 2 : size === Number(wanted);
}

function applyFilters() {
  const status = controls.status.value;
  const klass = controls.klass.value;
  const least = Number(controls.confidence.value) || 0;
  const source = controls.source ? controls.source.value : "";
  const picture = controls.image.value;
  const size = controls.set ? controls.set.value : "";
  const needle = controls.search.value.trim().toLowerCase();
  matching = rows.filter((row) =>
    (!status || row.status === status) &&
    (!klass || row.top === klass) &&
    (source === "" || row.source === Number(source)) &&
    (!picture || row.image === picture) &&
    (!size || setMatches(row.set_size, size)) &&
    (least <= 0 || (row.confidence !== null && row.confidence >= least)) &&
    (!needle || row.path.toLowerCase().includes(needle) || row.reason.toLowerCase().includes(needle)));
  matching.sort(compareBy(controls.sort.value));
  page = 0;
  selected = -1;
  render();
}

function pictureCell(row) {
  const cell = element("td", "image image-" + row.image);
  if (row.image === "shown") {
    cell.append(image(row.thumb, "the image"));
  } else if (row.image === "changed") {
    cell.append(element("div", "warning", "changed after its answer"));
    if (row.thumb) {
      const reveal = element("button", "reveal", "show the current file");
      reveal.type = "button";
      reveal.addEventListener("click", (event) => {
        event.stopPropagation();
        reveal.replaceWith(image(row.thumb, "the current file, changed after its answer"),
          element("div", "warning", "current file, not the one answered"));
      });
      cell.append(reveal);
    }
  } else {
    cell.append(element("span", "no-image", "no image"));
    cell.append(element("div", "why", row.image_note));
  }
  return cell;
}

// An empty set means no class is plausible: it is worded, never shown as a class (the answer above it is still
// the most probable class, as the model gives it).
function predictionSet(members) {
  if (members.length === 0) return element("div", "set set-empty", "no class plausible (empty set)");
  return element("div", "set", "set: " + members.join(", "));
}

function rowElement(row) {
  const tr = element("tr");
  tr.dataset.status = row.status;
  tr.dataset.confidence = row.confidence === null ? "" : String(row.confidence);
  tr.dataset.path = row.path;
  tr.dataset.source = String(row.source);
  tr.dataset.image = row.image;
  tr.dataset.setSize = row.set_size === null ? "" : String(row.set_size);
  if (row.image === "changed") tr.classList.add("changed");
  tr.append(pictureCell(row));
  if (hasOverlayColumn) {
    const overlay = element("td", "image");
    if (row.overlay) overlay.append(image(row.overlay, "Grad-CAM overlay"));
    tr.append(overlay);
  }
  if (hasSourceColumn) {
    const origin = element("td", "source");
    const source = sources[row.source];
    origin.append(element("div", "badge", source.label + " " + source.name), element("div", "reason", source.model));
    tr.append(origin);
  }
  tr.append(element("td", "path", row.path));
  const status = element("td");
  status.append(element("div", "status status-" + row.status, row.status));
  if (row.reason) status.append(element("div", "reason", row.reason));
  if (row.image === "changed") status.append(element("div", "warning", row.image_note));
  tr.append(status);
  const answer = row.status === "ok" ? row.predicted + " " + fixed(row.confidence, 3)
    : row.status === "refused" ? "not classified (" + row.top + " " + fixed(row.confidence, 3) + ")" : "";
  const answerCell = element("td", "answer", answer);
  if (Array.isArray(row.set)) answerCell.append(predictionSet(row.set));
  tr.append(answerCell);
  const probabilities = element("td");
  probabilities.append(probabilityBars(classes, row.probs));
  tr.append(probabilities);
  tr.append(element("td", "value", fixed(row.ood, 2)));
  tr.addEventListener("click", () => select(Array.prototype.indexOf.call(body.children, tr)));
  return tr;
}

function pages() {
  return Math.max(1, Math.ceil(matching.length / PAGE_SIZE));
}

function render() {
  const start = page * PAGE_SIZE;
  const slice = matching.slice(start, start + PAGE_SIZE);
  body.replaceChildren(...slice.map(rowElement));
  const range = matching.length ? (start + 1) + "–" + (start + slice.length) : "0";
  shown.textContent = "rows " + range + " of " + matching.length + " matching (" + rows.length + " in all)" +
    ", page " + (page + 1) + " of " + pages();
  shown.dataset.matching = String(matching.length);
  document.getElementById("previous").disabled = page === 0;
  document.getElementById("next").disabled = page >= pages() - 1;
  if (selected >= slice.length) selected = slice.length - 1;
  highlight();
}

function highlight() {
  Array.prototype.forEach.call(body.children, (tr, index) => tr.classList.toggle("selected", index === selected));
  if (selected >= 0 && body.children[selected]) body.children[selected].scrollIntoView({block: "nearest"});
}

function select(index) {
  selected = Math.max(0, Math.min(index, body.children.length - 1));
  highlight();
}

function turn(step) {
  const next = Math.max(0, Math.min(page + step, pages() - 1));
  if (next !== page) {
    page = next;
    selected = step > 0 ? 0 : Math.min(PAGE_SIZE, matching.length - page * PAGE_SIZE) - 1;
    render();
  }
}

for (const control of Object.values(controls).filter((c) => c !== null)) {
  control.addEventListener("input", applyFilters);
  control.addEventListener("change", applyFilters);
}
document.getElementById("previous").addEventListener("click", () => turn(-1));
document.getElementById("next").addEventListener("click", () => turn(1));
document.addEventListener("keydown", (event) => {
  const field = event.target.closest("input, select, textarea");
  if (field) {
    if (event.key === "Escape") field.blur();
    return;
  }
  if (event.altKey || event.ctrlKey || event.metaKey) return;
  const actions = {
    j: () => (selected < body.children.length - 1 ? select(selected + 1) : turn(1)),
    ArrowDown: () => (selected < body.children.length - 1 ? select(selected + 1) : turn(1)),
    k: () => (selected > 0 ? select(selected - 1) : turn(-1)),
    ArrowUp: () => (selected > 0 ? select(selected - 1) : turn(-1)),
    n: () => turn(1), ArrowRight: () => turn(1),
    p: () => turn(-1), ArrowLeft: () => turn(-1),
    "/": () => controls.search.focus(),
  };
  if (actions[event.key]) {
    event.preventDefault();
    actions[event.key]();
  }
});
applyFilters();
document.body.dataset.readyMs = String(Math.round(performance.now()));  // since navigation began
document.body.dataset.ready = "yes";
