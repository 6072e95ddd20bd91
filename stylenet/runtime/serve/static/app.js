// The page: pick a photo, pick a style, see it painted. Everything goes through the same
// POST /api/stylize that curl uses; no build step, no libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  file: null,        // the photo, as picked
  style: null,       // the selected style's name
  styles: [],        // GET /api/styles
  maxUploadMb: 25,
  request: null,     // the AbortController of the request in flight
  resultUrl: null,   // the blob: URL of the last result
  photoUrl: null,    // the blob: URL of the photo
  retries: 0,        // automatic retries after a 503
};

async function start() {
  bindInputs();
  try {
    const response = await fetch("/api/styles");
    const info = await response.json();
    state.styles = info.styles;
    state.maxUploadMb = info.limits.max_upload_mb;
    $("limits").textContent =
      `JPEG, PNG, WebP, … up to ${info.limits.max_upload_mb} MB and ` +
      `${info.limits.max_megapixels} megapixels`;
    $("curl").textContent =
      `curl -F image=@photo.jpg -F style=${info.default} ${location.origin}/api/stylize -o out.jpg`;
    buildGallery(info.styles, info.default);
  } catch (error) {
    showStatus(`Could not load the styles: ${error.message}`, true);
  }
}

function buildGallery(styles, selected) {
  const gallery = $("gallery");
  gallery.replaceChildren();
  for (const style of styles) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "style";
    button.setAttribute("role", "radio");
    button.dataset.style = style.name;
    button.title = style.card[0] || style.name;
    const img = document.createElement("img");
    img.src = style.thumbnail;
    img.alt = "";
    img.loading = "lazy";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = style.painting || style.name;
    const artist = document.createElement("span");
    artist.className = "artist";
    const known = [style.artist, style.year].filter((v) => v && v !== "unknown");
    artist.textContent = known.join(", ") || style.name;
    button.append(img, name, artist);
    button.addEventListener("click", () => selectStyle(style.name, true));
    gallery.append(button);
  }
  gallery.addEventListener("keydown", moveSelection);
  selectStyle(selected, false);
}

function selectStyle(name, run) {
  state.style = name;
  for (const button of $("gallery").children) {
    const chosen = button.dataset.style === name;
    button.setAttribute("aria-checked", String(chosen));
    button.tabIndex = chosen ? 0 : -1;
  }
  const style = state.styles.find((s) => s.name === name);
  $("card").replaceChildren(
    ...(style ? style.card : []).map((line) => {
      const item = document.createElement("li");
      item.textContent = line;
      return item;
    }),
  );
  if (run) stylize();
}

function moveSelection(event) {
  const steps = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 };
  if (!(event.key in steps)) return;
  event.preventDefault();
  const names = state.styles.map((s) => s.name);
  const next = names[(names.indexOf(state.style) + steps[event.key] + names.length) % names.length];
  selectStyle(next, true);
  $("gallery").querySelector(`[data-style="${CSS.escape(next)}"]`).focus();
}

function bindInputs() {
  for (const input of [$("file"), $("camera")]) {
    input.addEventListener("change", () => input.files[0] && usePhoto(input.files[0]));
  }
  $("another").addEventListener("click", () => $("file").click());
  $("strength").addEventListener("input", showStrength);
  $("strength").addEventListener("change", stylize);
  for (const id of ["preserve", "max-size", "format"]) $(id).addEventListener("change", stylize);
  $("split").addEventListener("input", () =>
    $("compare").style.setProperty("--split", `${$("split").value}%`));
  bindDrop();
  document.addEventListener("paste", (event) => {
    const file = [...event.clipboardData.files].find((f) => f.type.startsWith("image/"));
    if (file) usePhoto(file);
  });
}

function bindDrop() {
  let depth = 0;  // dragenter/dragleave fire for every child element
  document.addEventListener("dragenter", (event) => {
    event.preventDefault();
    if (depth++ === 0) document.body.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    if (--depth === 0) document.body.classList.remove("dragging");
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    document.body.classList.remove("dragging");
    const file = event.dataTransfer.files[0];
    if (file) usePhoto(file);
  });
}

function showStrength() {
  $("strength-value").textContent = `${$("strength").value}%`;
}

function usePhoto(file) {
  if (file.type && !file.type.startsWith("image/")) {
    showStatus(`${file.name} is not an image.`, true);
    return;
  }
  if (file.size > state.maxUploadMb * 1e6) {
    const mb = (file.size / 1e6).toFixed(1);
    showStatus(`${file.name} is ${mb} MB; this server takes up to ${state.maxUploadMb} MB.`, true);
    return;
  }
  state.file = file;
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  state.photoUrl = URL.createObjectURL(file);
  const before = $("before");
  before.onload = () => fitCompare(before.naturalWidth, before.naturalHeight);
  before.src = state.photoUrl;
  $("after").removeAttribute("src");
  $("compare").classList.remove("has-result");
  $("drop").hidden = true;
  $("compare").hidden = false;
  $("another").hidden = false;
  $("download").hidden = true;
  stylize();
}

function fitCompare(width, height) {
  if (!width || !height) return;
  const compare = $("compare");
  compare.style.aspectRatio = `${width} / ${height}`;
  compare.style.maxWidth = `calc(72vh * ${width / height})`;
}

async function stylize() {
  if (!state.file || !state.style) return;
  if (state.request) state.request.abort();
  const request = new AbortController();
  state.request = request;
  const form = new FormData();
  form.append("image", state.file, state.file.name || "photo.jpg");
  form.append("style", state.style);
  form.append("strength", String($("strength").value / 100));
  form.append("preserve_color", String($("preserve").checked));
  form.append("max_size", $("max-size").value);
  form.append("format", $("format").value);
  $("compare").dataset.state = "busy";
  showStatus("Painting…");
  const started = performance.now();
  try {
    const response = await fetch("/api/stylize", { method: "POST", body: form, signal: request.signal });
    if (!response.ok) return await refused(response);
    const blob = await response.blob();
    state.retries = 0;
    await showResult(blob, response, (performance.now() - started) / 1000);
  } catch (error) {
    if (error.name === "AbortError") return;
    $("compare").dataset.state = "error";
    showStatus(`Could not reach the server: ${error.message}`, true);
  } finally {
    if (state.request === request) state.request = null;
  }
}

async function refused(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    message = (await response.json()).error || message;
  } catch {
    // not JSON: keep the status line
  }
  const wait = Number(response.headers.get("Retry-After"));
  if (response.status === 503 && wait && state.retries < 3) {
    state.retries += 1;
    showStatus(`The server is busy; trying again in ${wait} s…`);
    setTimeout(stylize, wait * 1000);
    return;
  }
  state.retries = 0;
  $("compare").dataset.state = "error";
  showStatus(message.charAt(0).toUpperCase() + message.slice(1), true);
}

async function showResult(blob, response, seconds) {
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  state.resultUrl = URL.createObjectURL(blob);
  const after = $("after");
  after.src = state.resultUrl;
  await after.decode();
  const compare = $("compare");
  compare.classList.add("has-result");
  compare.dataset.state = "done";
  const download = $("download");
  download.href = state.resultUrl;
  const disposition = response.headers.get("Content-Disposition") || "";
  download.download = (disposition.match(/filename="([^"]+)"/) || [])[1] || "stylized";
  download.hidden = false;
  const size = `${after.naturalWidth} × ${after.naturalHeight}`;
  const kb = Math.round(blob.size / 1024);
  showStatus(`Painted in ${seconds.toFixed(1)} s · ${size} px · ${kb} KB`);
}

function showStatus(text, error = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", error);
}

start();
