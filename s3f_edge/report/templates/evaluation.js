// The evaluation page: the confusion matrix opens onto its images; the most confident mistakes as a gallery.
const classes = REPORT.classes;

function figure(row) {
  const node = element("figure");
  node.dataset.path = row.path;
  node.title = row.path;
  node.append(image(row.thumb, "the image"));
  const caption = element("figcaption");
  caption.append(element("div", "path mono", row.path.split(/[\\/]/).pop()));
  caption.append(element("div", row.truth === row.predicted ? "status-ok" : "status-error",
    "true " + classes[row.truth] + ", said " + classes[row.predicted] + " " + fixed(row.confidence, 3)));
  node.append(caption);
  return node;
}

function byConfidence(a, b) {
  return b.confidence - a.confidence || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
}

function showCell(cell) {
  const truth = Number(cell.dataset.truth), predicted = Number(cell.dataset.predicted);
  const chosen = REPORT.rows.filter((row) => row.truth === truth && row.predicted === predicted).sort(byConfidence);
  document.querySelectorAll("#confusion td.cell").forEach((other) => other.classList.toggle("active", other === cell));
  document.getElementById("cell-title").textContent =
    "True " + classes[truth] + ", predicted " + classes[predicted] + ": " + chosen.length + " image(s)";
  document.getElementById("cell-gallery").replaceChildren(...chosen.map(figure));
}

document.querySelectorAll("#confusion td.cell").forEach((cell) => {
  cell.addEventListener("click", () => showCell(cell));
  cell.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      showCell(cell);
    }
  });
});
const worst = REPORT.rows.filter((row) => row.truth !== row.predicted).sort(byConfidence).slice(0, REPORT.worst);
const gallery = document.getElementById("worst-errors");
gallery.replaceChildren(...worst.map(figure));
if (!worst.length) gallery.append(element("p", "notice", "No mistakes on this folder."));
document.body.dataset.ready = "yes";
