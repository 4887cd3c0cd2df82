// The try page: list a model's clips, play the reference, record or choose a take, POST /score, show the answer.
// Plain browser JavaScript, no build step, no external code: the router serves it under a strict
// Content-Security-Policy (no inline script). The API key lives in `state.key` only (never the URL or storage).
"use strict";

const PAGE_SIZE = 20;
const MAX_RECORD_S = 60; // the router refuses takes over its own limit (max_audio_seconds) with a sentence
const OPS = {
  match: "said right",
  substitution: "said instead",
  deletion: "missed",
  insertion: "added",
};

const state = { key: "", next: null, take: null, takeName: "", recorder: null, stream: null, urls: {}, loadSeq: 0 };
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

// Paths relative to the API root (the page is served at <root>/try/), so a path prefix in front still works.
function apiUrl(path) {
  return new URL("../" + path, document.baseURI).toString();
}

async function api(path, options = {}) {
  const headers = state.key ? { "X-API-Key": state.key } : {};
  let response;
  try {
    response = await fetch(apiUrl(path), { ...options, headers, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, "The router could not be reached (" + err.message + ").");
  }
  if (response.ok) return response;
  let detail = response.status + " " + response.statusText;
  try {
    const body = await response.json();
    if (body && typeof body.detail === "string") detail = body.detail;
  } catch (_) {
    // not JSON: keep the status line
  }
  throw new ApiError(response.status, detail);
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setUrl(slot, element, blob) {
  if (state.urls[slot]) URL.revokeObjectURL(state.urls[slot]);
  state.urls[slot] = blob ? URL.createObjectURL(blob) : null;
  if (state.urls[slot]) element.src = state.urls[slot];
  else element.removeAttribute("src");
  element.hidden = !blob;
}

// --- models and clips ---------------------------------------------------------------------------------------

async function loadModels() {
  const select = $("model");
  try {
    const body = await (await api("models")).json();
    const previous = select.value;
    select.replaceChildren();
    for (const m of body.models) {
      const option = new Option(m.ready ? m.key : m.key + " (not ready: " + m.reason + ")", m.key);
      select.add(option);
    }
    select.value = body.models.some((m) => m.key === previous) ? previous : body.default || body.models[0]?.key || "";
    clearError();
    await loadClips(true);
  } catch (err) {
    showError(err.message);
    if (err.status === 401) $("api-key").focus();
  }
}

async function loadClips(reset) {
  const list = $("clip-list");
  const status = $("list-status");
  if (reset) {
    list.replaceChildren();
    state.next = null;
  }
  const params = new URLSearchParams({ model: $("model").value, q: $("uid-search").value.trim(), limit: PAGE_SIZE });
  if (!reset && state.next) params.set("after", state.next);
  try {
    const body = await (await api("clips?" + params)).json();
    for (const clip of body.clips) list.add(new Option(clip.uid + " / " + clip.cid, clip.uid + "/" + clip.cid));
    state.next = body.next;
    $("more-clips").hidden = !body.next;
    const n = list.options.length;
    status.textContent = n
      ? n + (body.next ? "+" : "") + " clip" + (n === 1 ? "" : "s") + " listed."
      : "No clip in this model's cache matches; type a uid and cid below to score anyway.";
    if (reset && n && !$("uid").value) {
      list.selectedIndex = 0;
      await chooseListed();
    }
  } catch (err) {
    $("more-clips").hidden = true;
    status.textContent = err.message + (err.status === 503 ? " Type a uid and cid below to score anyway." : "");
    if (err.status === 401) showError(err.message);
  }
}

async function chooseListed() {
  const value = $("clip-list").value;
  if (!value) return;
  const [uid, cid] = value.split("/");
  $("uid").value = uid;
  $("cid").value = cid;
  await loadClip();
}

async function loadClip() {
  const uid = $("uid").value.trim();
  const cid = $("cid").value.trim();
  const seq = ++state.loadSeq;
  const audio = $("reference-audio");
  const status = $("audio-status");
  $("say").hidden = true;
  setUrl("reference", audio, null);
  status.textContent = "";
  if (!uid || !cid) return;
  const path = "clips/" + encodeURIComponent(uid) + "/" + encodeURIComponent(cid);
  try {
    const detail = await (await api(path + "?" + new URLSearchParams({ model: $("model").value }))).json();
    if (seq !== state.loadSeq) return;
    $("reference-text").textContent = detail.reference_text || detail.transcript;
    $("say").hidden = false;
    if (!detail.audio) {
      status.textContent = "The reference audio cannot be played here: " + detail.audio_detail + ". Scoring still works.";
      return;
    }
    status.textContent = "Loading the reference audio…";
    const blob = await (await api(path + "/audio")).blob();
    if (seq !== state.loadSeq) return;
    setUrl("reference", audio, blob);
    status.textContent = "";
  } catch (err) {
    if (seq === state.loadSeq) status.textContent = err.message;
  }
}

// --- the take -----------------------------------------------------------------------------------------------

function setTake(blob, name, message) {
  state.take = blob;
  state.takeName = name;
  setUrl("take", $("take-audio"), blob);
  $("rec-status").textContent = message;
}

function recorderType() {
  for (const type of ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm", "audio/ogg"]) {
    if (window.MediaRecorder && MediaRecorder.isTypeSupported(type)) return type;
  }
  return "";
}

async function startRecording() {
  clearError();
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.MediaRecorder) {
    showError(
      "This browser cannot record here: recording needs a secure page (HTTPS, or localhost) and the " +
        "MediaRecorder API. Choose a recording file instead.",
    );
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    const reasons = {
      NotAllowedError: "The microphone is blocked for this page: allow it in the browser, or choose a file.",
      NotFoundError: "No microphone was found: plug one in, or choose a recording file instead.",
      NotReadableError: "The microphone is in use by another program: close it, or choose a file.",
    };
    showError(reasons[err.name] || "The microphone could not be opened (" + err.message + ").");
    return;
  }
  const type = recorderType();
  const recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
  const chunks = [];
  const started = Date.now();
  recorder.ondataavailable = (event) => {
    if (event.data.size) chunks.push(event.data);
  };
  recorder.onstop = () => {
    clearInterval(state.timer);
    stream.getTracks().forEach((t) => t.stop());
    const mime = recorder.mimeType || type || "audio/webm";
    const blob = new Blob(chunks, { type: mime });
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    setTake(blob, mime.includes("ogg") ? "take.ogg" : "take.webm", "Recorded " + seconds + " s. Score it, or record again.");
    $("record").disabled = false;
    $("stop").disabled = true;
    $("timer").textContent = "";
    $("score").focus();
  };
  state.recorder = recorder;
  recorder.start();
  $("record").disabled = true;
  $("stop").disabled = false;
  $("stop").focus();
  $("rec-status").textContent = "Recording… press Stop when you are done.";
  state.timer = setInterval(() => {
    const s = (Date.now() - started) / 1000;
    $("timer").textContent = s.toFixed(0) + " s";
    if (s >= MAX_RECORD_S) stopRecording();
  }, 250);
}

function stopRecording() {
  if (state.recorder && state.recorder.state !== "inactive") state.recorder.stop();
}

// --- scoring ------------------------------------------------------------------------------------------------

function score3(value) {
  return typeof value === "number" ? value.toFixed(3) : "–";
}

function renderScore(id, value) {
  const dd = $(id);
  dd.textContent = score3(value);
  if (typeof value === "number") dd.style.setProperty("--level", Math.max(0, Math.min(1, value)).toString());
}

function extraFields(word) {
  // Per-word audio scores and timing, whatever the answer carries beyond op/word/said.
  const parts = [];
  for (const [name, value] of Object.entries(word)) {
    if (["op", "word", "said"].includes(name) || value === null || value === undefined) continue;
    parts.push(name.replace(/_/g, " ") + " " + (typeof value === "number" ? +value.toFixed(3) : String(value)));
  }
  return parts.join(", ");
}

function renderWords(words) {
  const list = $("words");
  list.replaceChildren();
  for (const w of words || []) {
    const item = document.createElement("li");
    item.className = "mark " + w.op;
    item.dataset.op = w.op;
    const label = document.createElement("span");
    label.className = "visually-hidden";
    label.textContent = OPS[w.op] + ": ";
    item.append(label);
    if (w.word !== null && w.word !== undefined) {
      const ref = document.createElement("span");
      ref.className = "word";
      ref.textContent = w.word;
      item.append(ref);
    }
    if (w.op !== "match" && w.said !== null && w.said !== undefined) {
      const said = document.createElement("span");
      said.className = "said";
      said.textContent = w.said;
      item.append(said);
    }
    const extra = extraFields(w);
    if (extra) {
      const small = document.createElement("small");
      small.className = "extra";
      small.textContent = extra;
      item.append(small);
    }
    list.append(item);
  }
}

function renderFlags(answer) {
  const flags = $("flags");
  flags.replaceChildren();
  const add = (text) => {
    const li = document.createElement("li");
    li.textContent = text;
    flags.append(li);
  };
  if (answer.no_speech) add("No speech was heard in the take: every score is 0.");
  if (answer.looped) {
    add(
      typeof answer.text_forced_score === "number"
        ? "The transcript repeated itself and was cut; the words are scored by how the recogniser finds them in your take."
        : "The transcript repeated itself and was cut; the overall score is the sound score."
    );
  }
  if (typeof answer.word_accuracy === "number") add("Word accuracy: " + score3(answer.word_accuracy));
  if (typeof answer.text_forced_score === "number" && typeof answer.text_transcript_score === "number") {
    add(
      "Words: " + score3(answer.text_transcript_score) + " as written by the recogniser, " +
        score3(answer.text_forced_score) + " as it finds the reference's words in your take"
    );
  }
  if (answer.language) add("Heard as language: " + answer.language);
  if (answer.text_similarity) add("Words compared by: " + answer.text_similarity);
  if (answer.audio_similarity) add("Sound compared by: " + answer.audio_similarity);
  add("Model: " + answer.model);
}

function render(answer) {
  renderScore("sim-score", answer.sim_score);
  renderScore("audio-score", answer.audio_sim_score);
  renderScore("text-score", answer.text_sim_score);
  renderFlags(answer);
  renderWords(answer.words);
  $("transcript").textContent = answer.transcript || "(nothing)";
  $("result-reference").textContent = answer.reference_text || answer.reference_transcript;
  $("raw").textContent = JSON.stringify(answer, null, 2);
  $("result").hidden = false;
}

async function submit() {
  clearError();
  const uid = $("uid").value.trim();
  const cid = $("cid").value.trim();
  if (!uid || !cid) return showError("Choose a clip, or type its uid and cid, first.");
  if (!state.take) return showError("Record a take or choose a recording file first.");
  const form = new FormData();
  form.append("uid", uid);
  form.append("cid", cid);
  if ($("model").value) form.append("model", $("model").value);
  form.append("audio", state.take, state.takeName);
  $("score").disabled = true;
  $("busy").textContent = "Scoring…";
  $("result").hidden = true;
  try {
    const answer = await (await api("score", { method: "POST", body: form })).json();
    render(answer);
    $("busy").textContent = "Scored: overall " + score3(answer.sim_score) + ".";
    $("h-result").focus();
  } catch (err) {
    $("busy").textContent = "";
    showError(err.message);
  } finally {
    $("score").disabled = false;
  }
}

// --- wiring -------------------------------------------------------------------------------------------------

function init() {
  $("h-result").tabIndex = -1;
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("api-key").value.trim();
    loadModels();
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadClips(true);
  });
  $("model").addEventListener("change", () => {
    loadClips(true);
    loadClip();
  });
  $("more-clips").addEventListener("click", () => loadClips(false));
  $("clip-list").addEventListener("change", chooseListed);
  for (const id of ["uid", "cid"]) $(id).addEventListener("change", loadClip);
  $("record").addEventListener("click", startRecording);
  $("stop").addEventListener("click", stopRecording);
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) setTake(file, file.name, "Chosen: " + file.name + ".");
  });
  $("score").addEventListener("click", submit);
  loadModels();
}

document.addEventListener("DOMContentLoaded", init);
