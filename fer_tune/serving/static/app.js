// The page of `fer-tune serve`: sends pictures (files, pastes, webcam frames) to POST /api/predict and
// draws what comes back: a box and a label per face on the picture, a bar per emotion per face.
"use strict";

const PREDICT = "/api/predict";
const FRAME_INTERVAL_MS = 1000 / 30; // the webcam sends at most 30 frames a second (a webcam's rate), one at a time
// Each frame carries the faces' boxes in the frame before (`track`): the server looks there first, a few ms
// instead of tens. Every FULL_SEARCH_EVERY-th frame goes without, so the whole frame is searched and a face
// that came into view is found within about a second. (bench/serve.py reads this number.)
const FULL_SEARCH_EVERY = 30;
const RATE_FRAMES = 30; // the frame rate shown is measured over the last this many frames
const FRAME_WIDTH = 640; // webcam frames are scaled to this width at most before sending
const COLORS = {
  angry: "#e5484d", disgust: "#30a46c", fear: "#8e4ec6", happy: "#f5a524",
  sad: "#3e63dd", surprise: "#0d9eb4", neutral: "#8b8d98",
};
const SPARE_COLORS = ["#d6409f", "#978365", "#5b5bd6", "#ad7f58"]; // classes beyond FER2013's seven

const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function colorOf(emotion, classes) {
  return COLORS[emotion] || SPARE_COLORS[Math.max(0, classes.indexOf(emotion)) % SPARE_COLORS.length];
}

const percent = (p) => `${(100 * p).toFixed(p >= 0.995 || p < 0.1 ? 0 : 1)}%`.replace(/\.0%$/, "%");

// ---- The served model, in the header.

let trainedOn = ""; // "trained on synthetic faces — not for real photographs": shown beside every prediction

async function showModel() {
  const panel = $("#model");
  try {
    const model = await getJSON("/api/model");
    panel.replaceChildren();
    const name = model.name ? `${model.name}${model.version ? ` v${model.version}` : ""}` : model.uri;
    panel.append(el("span", "model-name", name));
    for (const alias of model.aliases) panel.append(el("span", "chip", alias));
    if (model.test_accuracy !== null) {
      const metric = el("span", "metric");
      metric.append(el("strong", "", percent(model.test_accuracy)), ` ${model.eval_split || "test"} accuracy`);
      panel.append(metric);
    }
    if (model.latency_ms !== null) {
      const latency = el("span", "metric");
      latency.append(el("strong", "", `${model.latency_ms.toFixed(1)} ms`), " per face (CPU, 1 thread)");
      panel.append(latency);
    }
    const details = [model.architecture, model.sweep && `sweep ${model.sweep}`].filter(Boolean).join(" · ");
    if (details) panel.append(el("span", "", details));
    trainedOn = model.trained_on;
    panel.append(el("span", "trained-on", trainedOn));
    panel.title = `${model.uri}\nclasses: ${model.classes.join(", ")}`;
  } catch (error) {
    panel.replaceChildren(el("span", "model-name", `Model unavailable: ${error.message}`));
  }
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  let body;
  try {
    body = await response.json();
  } catch {
    throw new Error(`${response.status} ${response.statusText}`);
  }
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function predict(blob, filename, track = "") {
  const form = new FormData();
  form.append("file", blob, filename);
  if (track) form.append("track", track);
  return getJSON(PREDICT, { method: "POST", body: form });
}

// The `track` field from an answer: "x,y,width,height" per face found, ";" between ("" where none was).
function trackOf(prediction) {
  if (!prediction?.face_detected) return "";
  return prediction.faces.map(({ box }) => [box.x, box.y, box.width, box.height].join(",")).join(";");
}

// ---- Drawing a prediction: boxes over the picture, bars beside it.

function drawBoxes(figure, prediction, mirrored = false) {
  figure.querySelectorAll(".face-box").forEach((box) => box.remove());
  const classes = Object.keys(prediction.faces[0]?.probabilities || {});
  prediction.faces.forEach((face, i) => {
    const { x, y, width, height } = face.box;
    const left = mirrored ? prediction.width - x - width : x;
    const box = el("div", `face-box${prediction.face_detected ? "" : " whole"}${y < 28 ? " low" : ""}`);
    box.style.setProperty("--color", colorOf(face.emotion, classes));
    box.style.left = `${(100 * left) / prediction.width}%`;
    box.style.top = `${(100 * y) / prediction.height}%`;
    box.style.width = `${(100 * width) / prediction.width}%`;
    box.style.height = `${(100 * height) / prediction.height}%`;
    const number = prediction.faces.length > 1 ? `${i + 1} · ` : "";
    box.append(el("span", "tag", `${number}${face.emotion} ${percent(face.confidence)}`));
    figure.append(box);
  });
}

function drawBars(container, prediction) {
  container.replaceChildren();
  if (prediction.note) container.append(el("p", "note", "No face found: the whole picture was classified."));
  prediction.faces.forEach((face, i) => container.append(faceChart(face, i, prediction.faces.length)));
  if (trainedOn) container.append(el("p", "trained-on", `Model ${trainedOn}.`));
}

function faceChart(face, index, count) {
  const classes = Object.keys(face.probabilities);
  const chart = el("div", "face");
  chart.style.setProperty("--color", colorOf(face.emotion, classes));
  const title = el("h3");
  if (count > 1) title.append(el("span", "number", String(index + 1)));
  title.append(el("span", "top", face.emotion), el("span", "pct", percent(face.confidence)));
  const bars = el("ol", "bars");
  for (const emotion of classes) {
    const p = face.probabilities[emotion];
    const row = el("li", `bar-row${emotion === face.emotion ? " top" : ""}`);
    row.setAttribute("aria-label", `${emotion} ${percent(p)}`);
    const track = el("span", "track");
    const bar = el("span", "bar");
    bar.style.setProperty("--color", colorOf(emotion, classes));
    bar.style.width = `${(100 * p).toFixed(2)}%`;
    track.append(bar);
    row.append(el("span", "label", emotion), track, el("span", "value", percent(p)));
    bars.append(row);
  }
  chart.append(title, bars);
  return chart;
}

// ---- Files: dropped, chosen or pasted; a card each, newest first.

function resultCard(file) {
  const card = el("article", "card result");
  card.dataset.state = "busy";
  const head = el("header", "card-head");
  head.append(el("h2", "", file.name || "pasted image"), el("span", "status", "reading faces…"));
  const body = el("div", "card-body");
  const figure = el("figure", "picture");
  const image = el("img");
  image.alt = file.name || "uploaded picture";
  image.src = URL.createObjectURL(file);
  figure.append(image);
  body.append(figure, el("div", "faces"));
  card.append(head, body);
  return card;
}

async function readFiles(files) {
  const images = [...files].filter((file) => file.type.startsWith("image/") || file.type === "");
  if (images.length === 0) return;
  const cards = images.map(resultCard);
  $("#results").prepend(...cards);
  $("#clear").hidden = false;
  for (const [i, file] of images.entries()) await readOne(file, cards[i]); // one at a time, in order
}

async function readOne(file, card) {
  const status = $(".status", card);
  try {
    const prediction = await predict(file, file.name || "pasted.png");
    drawBoxes($(".picture", card), prediction);
    drawBars($(".faces", card), prediction);
    const found = prediction.face_detected ? prediction.faces.length : 0;
    status.textContent = `${found || "no"} face${found === 1 ? "" : "s"} · ${prediction.width}×${prediction.height}`;
    card.dataset.state = "done";
  } catch (error) {
    card.classList.add("error");
    status.textContent = error.message;
    card.dataset.state = "error";
  }
}

function wireFiles() {
  const drop = $("#drop");
  const input = $("#files");
  input.addEventListener("change", () => {
    readFiles(input.files);
    input.value = ""; // the same file chosen again still fires `change`
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    readFiles(event.dataTransfer.files);
  });
  // A drop that misses the zone must not navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  document.addEventListener("paste", (event) => readFiles(event.clipboardData?.files || []));
  $("#clear").addEventListener("click", () => {
    $("#results").querySelectorAll("img").forEach((image) => URL.revokeObjectURL(image.src));
    $("#results").replaceChildren();
    $("#clear").hidden = true;
  });
}

// ---- The webcam: frames go to the API one at a time, at most every FRAME_INTERVAL_MS.

const webcam = { stream: null, frames: 0, recent: [] }; // recent: [finished at, ms end to end] of the last frames

async function startWebcam() {
  const live = $("#live");
  const status = $("#live-status");
  if (!navigator.mediaDevices?.getUserMedia) {
    live.hidden = false;
    status.textContent = "the webcam needs https or http://localhost (this browser offers none here)";
    return;
  }
  try {
    webcam.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (error) {
    live.hidden = false;
    status.textContent = `no webcam: ${error.message}`;
    return;
  }
  const video = $("#video");
  video.srcObject = webcam.stream;
  await video.play();
  Object.assign(webcam, { frames: 0, recent: [] });
  live.hidden = false;
  live.dataset.frames = "0";
  $("#live-rate").textContent = "";
  setWebcamButton(true);
  sendFrames(webcam.stream);
}

function stopWebcam() {
  webcam.stream?.getTracks().forEach((track) => track.stop());
  webcam.stream = null;
  $("#video").srcObject = null;
  $("#live").hidden = true;
  setWebcamButton(false);
}

function setWebcamButton(on) {
  const button = $("#webcam");
  button.setAttribute("aria-pressed", String(on));
  button.textContent = on ? "Stop webcam" : "Start webcam";
}

async function sendFrames(stream) {
  const video = $("#video");
  const canvas = document.createElement("canvas");
  let track = ""; // the faces of the last answered frame
  while (webcam.stream === stream) {
    const began = performance.now();
    try {
      const hint = webcam.frames % FULL_SEARCH_EVERY === 0 ? "" : track;
      const prediction = await predict(await frameOf(video, canvas), "webcam.jpg", hint);
      if (webcam.stream !== stream) return; // stopped while the frame was on its way
      drawBoxes($("#live .picture"), prediction, true);
      drawBars($("#live .faces"), prediction);
      track = trackOf(prediction);
      webcam.frames += 1;
      $("#live").dataset.frames = String(webcam.frames);
      showRate(began, performance.now());
      $("#live-status").textContent = "live";
    } catch (error) {
      track = "";
      $("#live-status").textContent = error.message;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, FRAME_INTERVAL_MS - (performance.now() - began))));
  }
}

// Frames a second and milliseconds a frame (capture, upload, search, model, drawing) over the last RATE_FRAMES.
function showRate(began, finished) {
  webcam.recent.push([finished, finished - began]);
  if (webcam.recent.length > RATE_FRAMES) webcam.recent.shift();
  const rate = $("#live-rate");
  const first = webcam.recent[0][0];
  const times = webcam.recent.map(([, ms]) => ms).sort((a, b) => a - b);
  const ms = times[Math.floor(times.length / 2)]; // the median: one slow whole-frame search does not swing it
  // The rate needs two frames: n frames finishing over a span are n - 1 intervals.
  const fps = webcam.recent.length > 1 ? (1000 * (webcam.recent.length - 1)) / (finished - first) : 1000 / ms;
  rate.dataset.fps = fps.toFixed(1);
  rate.dataset.ms = ms.toFixed(0);
  rate.textContent = `${fps.toFixed(1)} frames/s · ${Math.round(ms)} ms a frame`;
}

function frameOf(video, canvas) {
  const scale = Math.min(1, FRAME_WIDTH / video.videoWidth);
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve, reject) =>
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("no frame yet"))), "image/jpeg", 0.85),
  );
}

function wireWebcam() {
  $("#webcam").addEventListener("click", () => (webcam.stream ? stopWebcam() : startWebcam()));
}

showModel();
wireFiles();
wireWebcam();
