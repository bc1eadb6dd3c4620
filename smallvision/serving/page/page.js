// The try-a-picture page: each picked or dropped picture is sent to POST /predict on its own and shown with its
// top classes as bars. Text from files and the server is set with textContent only, never parsed as HTML.
"use strict";

const results = document.getElementById("results");
const drop = document.getElementById("drop");
const picker = document.getElementById("picker");

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function describeModel() {
  try {
    const response = await fetch("model");
    const model = await response.json();
    document.getElementById("model-line").textContent =
      `${model.name}: ${model.recipe || "model"} at ${model.image_size} px, ${model.headline}`;
    const multi = model.task === "multi_label";
    document.getElementById("classes").textContent =
      `${multi ? "Labels (any number per picture)" : "Classes"}: ${model.classes.join(", ")}`;
    const check = model.export && model.export.check;
    if (check) {
      document.getElementById("export-line").textContent =
        `Served from ${model.export.file}, checked against ${check.compared_with || "the PyTorch model"} on ` +
        `${check.images} images: ` +
        (check.labels_agreement !== undefined
          ? `thresholded-label agreement ${(100 * check.labels_agreement).toFixed(1)}%`
          : `top-1 agreement ${(100 * check.top1_agreement).toFixed(1)}%`) + `, largest probability difference ` +
        `${Number(check.max_abs_diff).toExponential(1)}`;
    }
    document.getElementById("report-link").hidden = !model.report;
  } catch (error) {
    document.getElementById("model-line").textContent = `Could not read the model's description (${error})`;
  }
}

function showTop(card, top) {
  const bars = element("div", "bars");
  for (const entry of top) {
    const bar = element("div", "bar");
    const label = element("div", "label");
    label.append(element("span", "class-name", entry.class),
                 element("span", "probability", `${(100 * entry.probability).toFixed(1)}%`));
    const track = element("div", "track");
    const fill = element("div", "fill");
    fill.style.width = `${(100 * entry.probability).toFixed(1)}%`;
    track.append(fill);
    bar.append(label, track);
    bars.append(bar);
  }
  card.querySelector(".status").replaceWith(bars);
  card.dataset.state = "done";
  card.dataset.top = top[0].class;
}

function showLabels(card, labels) {
  // a multi-label model: the labels at or above their thresholds, as chips with their probabilities
  const chips = element("div", "chips");
  if (!labels.length) chips.append(element("span", "none", "no label at or above its threshold"));
  for (const entry of labels) {
    chips.append(element("span", "chip", `${entry.label} ${(100 * entry.probability).toFixed(1)}%`));
  }
  card.querySelector(".bars").before(chips);
  card.dataset.labels = labels.map((entry) => entry.label).join(" ");
}

async function classify(file) {
  const card = element("article", "card");
  card.dataset.state = "pending";
  const image = element("img");
  image.alt = file.name;
  image.src = URL.createObjectURL(file);
  card.append(image, element("div", "name", file.name), element("div", "status", "classifying\u2026"));
  results.prepend(card);
  const form = new FormData();
  form.append("files", file, file.name);
  try {
    const response = await fetch("predict", { method: "POST", body: form });
    const text = await response.text();
    let answer = null;
    try { answer = JSON.parse(text); } catch { answer = null; }  // a proxy's or a crash's plain-text error page
    if (!response.ok) {
      const why = answer && answer.detail ? answer.detail : (response.statusText || "not a JSON answer");
      throw new Error(`HTTP ${response.status}: ${why}`);
    }
    if (!answer) throw new Error(`HTTP ${response.status}: the answer is not JSON`);
    const prediction = answer.predictions[0];
    showTop(card, prediction.top);
    if (prediction.labels) showLabels(card, prediction.labels);
  } catch (error) {
    card.dataset.state = "error";
    card.querySelector(".status").textContent = `Not classified: ${error.message}`;
  }
}

function classifyAll(files) {
  for (const file of files) classify(file);
}

picker.addEventListener("change", () => { classifyAll(picker.files); picker.value = ""; });
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (event) => { event.preventDefault(); classifyAll(event.dataTransfer.files); });
describeModel();
