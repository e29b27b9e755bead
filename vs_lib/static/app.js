// The visual search page: plain JavaScript, no framework, nothing loaded from the internet.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const FOLDER_PAGE = 24;  // thumbnails per page of the folder grid
const state = {
  mode: "platform", // or "folder" (python -m vs_lib serve --folder DIR): /health says which
  query: null,      // {kind: "id", id}, {kind: "path", path} (folder mode) or {kind: "file", file}
  img: null,        // HTMLImageElement of the query (may be a reduced copy of the original)
  full: null,       // [w, h] of the original image: crops are in these pixels
  offset: 0,        // folder mode: first path of the page shown
  fit: null,        // {x, y, w, h, scale}: where the image sits on the canvas
  crop: null,       // [x0, y0, x1, y1] in original pixels, or null
  drag: null,       // canvas coordinates of the drag start
  highlight: null,  // image id to highlight in the results (a fresh upload)
  userId: null,     // who the session cookie speaks for (null: anonymous)
  csrf: null,       // the session's CSRF token, sent with every POST/DELETE
};

// every request that changes something carries the session's CSRF token; the cookie goes by itself
function send(url, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.csrf && options.method && options.method !== "GET") headers.set("X-CSRF-Token", state.csrf);
  return fetch(url, { ...options, headers, credentials: "same-origin" });
}

function showSession(s) {
  state.userId = s.signed_in ? s.user_id : null;
  state.csrf = s.csrf_token || null;
  $("signin").hidden = s.signed_in || s.sign_in_required === false;
  $("whoami").hidden = !s.signed_in;
  $("signout").hidden = s.sign_in_required === false;
  $("whoid").textContent = s.signed_in ? s.user_id : "";
  if (s.detail) showError(`signed out: ${s.detail}`);
}

async function loadSession() {
  const r = await send("/auth/session");
  showSession(r.ok ? await r.json() : { signed_in: false });
}

async function signIn(fields) {
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) if (v) form.append(k, v);
  const r = await send("/auth/session", { method: "POST", body: form });
  if (!r.ok) { showError(`sign-in failed — ${await apiError(r)}`); return false; }
  showError("");
  showSession(await r.json());
  await loadStrip();
  return true;
}

$("signin").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const ok = await signIn({ token: $("token").value.trim(), username: $("username").value.trim(), password: $("password").value });
  if (ok) { $("token").value = ""; $("password").value = ""; }
});
$("signout").addEventListener("click", async () => {
  await send("/auth/session", { method: "DELETE" });
  showSession({ signed_in: false });
  await loadStrip();
});

function showError(msg) { $("error").textContent = msg || ""; }

async function apiError(resp) {
  try {
    const body = await resp.json();
    const d = body.detail;
    return `${resp.status}: ${typeof d === "string" ? d : JSON.stringify(d)}`;
  } catch (e) {
    return `${resp.status} ${resp.statusText}`;
  }
}

async function loadHealth() {
  try {
    const r = await fetch("/health");
    const h = await r.json();
    $("health").textContent = `${h.images_indexed.toLocaleString()} images indexed · model ${h.model} · index ${h.index_kind}`;
    return h;
  } catch (e) { $("health").textContent = "service unreachable"; return null; }
}

async function loadStrip() {
  const r = await send("/corpus/random?n=16");
  if (!r.ok) { showError(await apiError(r)); return; }
  const { image_ids } = await r.json();
  const strip = $("strip");
  strip.innerHTML = "";
  for (const id of image_ids) {
    const im = document.createElement("img");
    im.src = thumbUrl(id, 56);
    im.alt = `image ${id}`;
    im.title = `image ${id}`;
    im.dataset.id = id;
    im.addEventListener("click", () => {
      for (const o of strip.children) o.classList.remove("selected");
      im.classList.add("selected");
      setQuery({ kind: "id", id }, `/images/${id}`);
    });
    strip.appendChild(im);
  }
}

function thumbUrl(id, size) {
  return `/images/${id}?size=${size}`;
}

// full: [w, h] of the original when src is a reduced copy (folder mode); default the image's own size
function setQuery(query, src, full = null) {
  return new Promise((resolve) => {
  const img = new Image();
  img.onload = () => {
    state.query = query;
    state.img = img;
    state.full = full || [img.naturalWidth, img.naturalHeight];
    state.crop = null;
    const [fw, fh] = state.full;
    const scale = Math.min(canvas.width / fw, canvas.height / fh);  // canvas pixels per original pixel
    const w = fw * scale, h = fh * scale;
    state.fit = { x: (canvas.width - w) / 2, y: (canvas.height - h) / 2, w, h, scale };
    const what = query.kind === "id" ? `corpus image ${query.id}` : query.kind === "path" ? query.path : `your file ${query.file.name}`;
    $("qinfo").textContent = `${what}, ${fw}×${fh} px`;
    $("search").disabled = false;
    draw();
    resolve(true);
  };
  img.onerror = () => { showError("could not display this image in the browser"); resolve(false); };
  img.src = src;
  });
}

function draw() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!state.img) return;
  const f = state.fit;
  ctx.imageSmoothingEnabled = f.scale < 1;
  ctx.drawImage(state.img, f.x, f.y, f.w, f.h);
  if (state.crop) {
    const [x0, y0, x1, y1] = state.crop;
    ctx.strokeStyle = "#ff3d00";
    ctx.lineWidth = 2;
    ctx.strokeRect(f.x + x0 * f.scale, f.y + y0 * f.scale, (x1 - x0) * f.scale, (y1 - y0) * f.scale);
  }
  $("croptext").textContent = state.crop ? state.crop.join(",") : "none";
}

// canvas position → original pixel coordinates, clamped to the image
function toPixels(cx, cy) {
  const f = state.fit;
  const px = Math.round((cx - f.x) / f.scale), py = Math.round((cy - f.y) / f.scale);
  return [Math.max(0, Math.min(state.full[0], px)), Math.max(0, Math.min(state.full[1], py))];
}

function canvasXY(ev) {
  const r = canvas.getBoundingClientRect();  // includes the border: the drawing starts inside it
  const x = ev.clientX - r.left - canvas.clientLeft, y = ev.clientY - r.top - canvas.clientTop;
  return [x * canvas.width / canvas.clientWidth, y * canvas.height / canvas.clientHeight];
}

canvas.addEventListener("mousedown", (ev) => {
  if (!state.img) return;
  state.drag = toPixels(...canvasXY(ev));
});
canvas.addEventListener("mousemove", (ev) => {
  if (!state.drag) return;
  const [x, y] = toPixels(...canvasXY(ev));
  const [sx, sy] = state.drag;
  state.crop = [Math.min(sx, x), Math.min(sy, y), Math.max(sx, x), Math.max(sy, y)];
  draw();
});
window.addEventListener("mouseup", () => {
  if (!state.drag) return;
  state.drag = null;
  if (state.crop && (state.crop[2] - state.crop[0] < 2 || state.crop[3] - state.crop[1] < 2)) state.crop = null;
  draw();
});
$("clearcrop").addEventListener("click", () => { state.crop = null; draw(); });

async function runSearch() {
  if (!state.query) return;
  showError("");
  const form = new FormData();
  if (state.query.kind === "id") form.append("image_id", state.query.id);
  else if (state.query.kind === "path") form.append("path", state.query.path);
  else form.append("image", state.query.file);
  if (state.crop) form.append("crop", state.crop.join(","));
  form.append("k", $("k").value || "10");
  const cut = minScore();
  if (state.mode === "folder" && cut !== null) form.append("min_score", String(cut));
  $("search").disabled = true;
  try {
    const r = await send("/search", { method: "POST", body: form });
    if (!r.ok) { showError(await apiError(r)); return; }
    const body = await r.json();
    renderResults(body);
  } catch (e) {
    showError(`request failed: ${e}`);
  } finally {
    $("search").disabled = false;
  }
}
$("search").addEventListener("click", runSearch);

function renderResults(body) {
  if (state.mode === "folder") { renderFolderResults(body); return; }
  const grid = $("grid");
  grid.innerHTML = "";
  for (const r of body.results) {
    const cell = document.createElement("div");
    cell.className = "cell";
    cell.dataset.id = r.image_id;
    if (state.highlight !== null && r.image_id === state.highlight) cell.classList.add("new");
    const im = document.createElement("img");
    im.src = r.thumbnail_url;
    im.alt = `image ${r.image_id}`;
    cell.appendChild(im);
    const cap = document.createElement("div");
    cap.innerHTML = `#${r.rank} · <span class="score">${r.score.toFixed(3)}</span><br>id ${r.image_id}`;
    cell.appendChild(cap);
    const tags = document.createElement("div");
    tags.className = "tags";
    tags.textContent = r.tags || "";
    tags.title = r.tags || "";
    cell.appendChild(tags);
    grid.appendChild(cell);
  }
  if (body.fewer_than_k) {
    const note = document.createElement("div");
    note.className = "muted";
    note.textContent = `only ${body.results.length} results: the filters left fewer than k (${body.stop_reason})`;
    grid.appendChild(note);
  }
  const t = body.timings_ms;
  $("timings").textContent = Object.entries(t).map(([k, v]) => `${k} ${v.toFixed(1)} ms`).join(" · ");
  if (state.highlight !== null) {
    const hit = body.results.find((r) => r.image_id === state.highlight);
    $("uploadmsg").textContent += hit ? ` — found at rank ${hit.rank} (score ${hit.score.toFixed(3)})` : " — not in the top k";
    state.highlight = null;
  }
}

$("queryfile").addEventListener("change", () => {
  const file = $("queryfile").files[0];
  if (!file) return;
  setQuery({ kind: "file", file }, URL.createObjectURL(file));
});

$("uploadbtn").addEventListener("click", async () => {
  const file = $("uploadfile").files[0];
  $("uploadmsg").textContent = "";
  showError("");
  if (!file) { showError("choose a file to upload first"); return; }
  if (state.userId === null) { showError("sign in to upload: an image belongs to whoever uploads it"); return; }
  const form = new FormData();
  form.append("image", file);
  form.append("tags", $("tags").value);
  form.append("is_private", $("private").checked ? "true" : "false");
  const r = await send("/images", { method: "POST", body: form });
  if (!r.ok) { showError(await apiError(r)); return; }
  const body = await r.json();
  $("uploadmsg").textContent = `uploaded as image ${body.image_id} in ${body.timings_ms.total.toFixed(1)} ms`;
  state.highlight = body.image_id;
  // search with the uploaded file itself: the new image should come first
  await setQuery({ kind: "file", file }, URL.createObjectURL(file));
  await runSearch();
  loadHealth();
});

$("shuffle").addEventListener("click", loadStrip);

// ------------------------------------------------------------------ folder mode (serve --folder DIR)
function minScore() {
  const v = Number($("minscore").value);
  return v <= Number($("minscore").min) ? null : v;  // the slider's left end: no cut-off
}

function showMinScore() {
  const v = minScore();
  $("minscoretext").textContent = v === null ? "off" : v.toFixed(2);
}
$("minscore").addEventListener("input", showMinScore);
$("minscore").addEventListener("change", () => { if (state.query && state.mode === "folder") runSearch(); });

async function loadFolderPage(offset) {
  const r = await fetch(`/files?offset=${offset}&limit=${FOLDER_PAGE}`);
  if (!r.ok) { showError(await apiError(r)); return; }
  const body = await r.json();
  state.offset = body.offset;
  const strip = $("strip");
  strip.innerHTML = "";
  for (const f of body.files) {
    const im = document.createElement("img");
    im.alt = f.path;
    im.title = f.path;
    im.dataset.path = f.path;
    if (f.thumbnail_url) im.src = f.thumbnail_url;
    else { im.classList.add("missing"); im.title = `${f.path}: its file lies outside the folder, so it is not served`; }
    im.addEventListener("click", async () => {
      for (const o of strip.children) o.classList.remove("selected");
      im.classList.add("selected");
      await pickPath(f.path);
    });
    strip.appendChild(im);
  }
  const pages = Math.max(1, Math.ceil(body.total / FOLDER_PAGE));
  $("pageinfo").textContent = `page ${Math.floor(body.offset / FOLDER_PAGE) + 1} of ${pages} · ${body.total} images`;
  $("prevpage").disabled = body.offset === 0;
  $("nextpage").disabled = body.offset + FOLDER_PAGE >= body.total;
}
$("prevpage").addEventListener("click", () => loadFolderPage(Math.max(0, state.offset - FOLDER_PAGE)));
$("nextpage").addEventListener("click", () => loadFolderPage(state.offset + FOLDER_PAGE));

// an indexed file as the query: a reduced copy to draw on, and the original's size for the crop
async function pickPath(path) {
  showError("");
  const r = await fetch(`/files/view?path=${encodeURIComponent(path)}`);
  if (!r.ok) { showError(await apiError(r)); return false; }
  const full = [Number(r.headers.get("X-Full-Width")), Number(r.headers.get("X-Full-Height"))];
  const url = URL.createObjectURL(await r.blob());
  return setQuery({ kind: "path", path }, url, full);
}

function renderFolderResults(body) {
  const grid = $("grid");
  grid.innerHTML = "";
  for (const r of body.results) {
    const cell = document.createElement("div");
    cell.className = "cell";
    cell.dataset.path = r.path;
    cell.dataset.score = r.score;
    let pic;
    if (r.thumbnail_url) {
      pic = document.createElement("img");
      pic.src = r.thumbnail_url;
      pic.alt = r.path;
      pic.title = "search with this image";
      pic.addEventListener("click", () => pickPath(r.path));
    }
    else { pic = document.createElement("span"); pic.className = "missing"; pic.textContent = "not served"; }
    cell.appendChild(pic);
    const cap = document.createElement("div");
    cap.innerHTML = `#${r.rank} · <span class="score">${r.score.toFixed(3)}</span>`;
    cell.appendChild(cap);
    const name = document.createElement("div");
    name.className = "path";
    name.textContent = r.path;
    name.title = r.duplicates ? `${r.path}\n+ ${r.duplicate_paths.join("\n+ ")}` : r.path;
    cell.appendChild(name);
    if (r.duplicates) {
      const dup = document.createElement("div");
      dup.className = "tags";
      dup.textContent = `+${r.duplicates} near-duplicate${r.duplicates > 1 ? "s" : ""}`;
      cell.appendChild(dup);
    }
    grid.appendChild(cell);
  }
  const note = document.createElement("div");
  note.className = "muted";
  note.id = "resultnote";
  const cut = body.min_score === null ? "" : ` with score ≥ ${body.min_score.toFixed(2)}`;
  note.textContent = `${body.results.length} results${cut}` + (body.collapsed ? ` · ${body.collapsed} near-duplicates collapsed` : "");
  grid.appendChild(note);
  const t = body.timings_ms;
  $("timings").textContent = Object.entries(t).map(([k, v]) => `${k} ${v.toFixed(1)} ms`).join(" · ");
}

function startFolder(h) {
  state.mode = "folder";
  document.body.classList.add("folder");
  document.title = `vs_lib visual search · ${h.collection}`;
  $("subtitle").textContent = `Your folder ${h.folder}: pick an image, upload one or draw a crop; the folder's ` +
    "images are ranked by the similarity of their embeddings. Nothing is written into the folder.";
  for (const id of ["signin", "whoami", "upload", "shuffle"]) $(id).hidden = true;
  $("pager").hidden = false;
  $("minscorebox").hidden = false;
  canvas.width = canvas.height = 420;
  draw();
  showMinScore();
  return loadFolderPage(0);
}

async function start() {
  const h = await loadHealth();
  if (h && h.mode === "folder") { await startFolder(h); return; }
  // a sign-in link (serve --demo-user) carries the token in the fragment, which is never sent to a server
  const m = location.hash.match(/^#token=([A-Za-z0-9._-]+)$/);
  if (m) {
    history.replaceState(null, "", location.pathname);
    if (await signIn({ token: m[1] })) return;
  }
  await loadSession();
  await loadStrip();
}
start();
