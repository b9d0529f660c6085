// rawlink live view. One WebSocket per stream pushes JSON ("stats", "view") and, after
// each "view", the JPEG preview as a binary message. Controls use the JSON API.
"use strict";

const $ = (id) => document.getElementById(id);
const api = (path) => `/api/streams/${streamId}${path}`;

let streamId = 0;
let ws = null;
let retryMs = 500;
let paused = false;
let pin = null; // the server's hold on the paused frame: downloads and crops name it
let pendingView = null; // the "view" message whose JPEG comes next
let lastView = null; // the view on screen
let lastUrl = null;
let shownTimes = []; // when images were shown, for "fps shown"
let lastStats = null;
let zoomAt = null; // full-resolution point of the 1:1 zoom
let zoomLoading = false;

function fmt(v, digits = 1) {
  return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "—";
}

function setBadge(el, text, cls) {
  el.textContent = text;
  el.className = "badge " + (cls || "");
}

function fpsShown() {
  const now = performance.now();
  shownTimes = shownTimes.filter((t) => now - t < 2000);
  if (shownTimes.length < 2) return 0;
  return (shownTimes.length - 1) / ((now - shownTimes[0]) / 1000);
}

function facts(s) {
  const f = s.frame || {};
  const c = s.counters || {};
  const l = s.latency_ms || {};
  const time = f.timestamp_ns ? new Date(f.timestamp_ns / 1e6).toISOString().replace("T", " ").replace("Z", "") : "—";
  return [
    ["stream", s.name, "name"],
    ["source", s.source || "—", "source"],
    ["server", s.server || "—", "server"],
    ["geometry", f.width ? `${f.width} × ${f.height}` : "—", "geometry"],
    ["pattern · bits", f.pattern ? `${f.pattern.toUpperCase()} · ${f.bits}-bit` : "—", "format"],
    ["black · white", f.pattern ? `${f.black_level} · ${f.white_level}` : "—", "levels"],
    ["fps in", fmt(s.fps_in), "fps-in"],
    ["fps shown", fmt(paused ? 0 : fpsShown()), "fps-shown"],
    ["fps processed", fmt(s.fps_processed), "fps-processed"],
    ["MB/s", fmt(s.mb_per_s), "mbps"],
    ["latency p50 / p90 / p99", `${fmt(l.p50, 2)} / ${fmt(l.p90, 2)} / ${fmt(l.p99, 2)} ms`, "latency"],
    ["frames", c.frames ?? "—", "frames"],
    ["drops (server)", c.server_drops ?? "—", "drops"],
    ["missing (seq gaps)", c.missing ?? "—", "missing"],
    ["CRC errors", c.crc_errors ?? "—", "crc"],
    ["protocol errors", c.protocol_errors ?? "—", "proto"],
    ["reconnects", c.reconnects ?? "—", "reconnects"],
    ["seq", f.seq ?? "—", "seq"],
    ["timestamp", time, "timestamp"],
    ["exposure", f.exposure_us !== undefined ? `${f.exposure_us} µs` : "—", "exposure"],
    ["gain", f.analog_gain !== undefined ? `${fmt(f.analog_gain, 2)}×` : "—", "gain"],
    ["viewers", s.viewers, "viewers"],
  ];
}

function renderStats(s) {
  lastStats = s;
  const body = $("facts").tBodies[0];
  const rows = facts(s);
  if (body.rows.length !== rows.length) {
    body.innerHTML = "";
    for (const [k, , id] of rows) {
      const tr = body.insertRow();
      tr.insertCell().textContent = k;
      tr.insertCell().id = id;
    }
  }
  for (const [, v, id] of rows) $(id).textContent = v;
  const cls = { streaming: "ok", ended: "bad", reconnecting: "bad" }[s.state] || "wait";
  setBadge($("state"), s.detail ? `${s.state}: ${s.detail}` : s.state, cls);
  $("waiting").hidden = !!lastView;
  if (!lastView) $("waiting").textContent = s.state === "streaming" ? "Processing the first frame…" : "Waiting for frames…";
  renderSettings(s.settings);
}

function renderSettings(set) {
  if (!set) return;
  if (document.activeElement !== $("profile")) $("profile").value = set.profile;
  if (document.activeElement !== $("demosaic")) $("demosaic").value = set.demosaic || "auto";
  // The reference profile always demosaics bilinearly: nothing to choose.
  $("demosaic").disabled = set.profile === "reference";
  const box = $("stages");
  const key = set.profile + ":" + set.stages.map((s) => s.name).join(",");
  if (box.dataset.key !== key) {
    box.dataset.key = key;
    box.innerHTML = "";
    for (const st of set.stages) {
      const label = document.createElement("label");
      const cb = document.createElement("input");
      cb.type = "checkbox";
      cb.dataset.stage = st.name;
      cb.addEventListener("change", () => change({ stages: { [st.name]: cb.checked } }));
      label.append(cb, " " + st.name);
      box.append(label);
    }
  }
  for (const st of set.stages) {
    const cb = box.querySelector(`input[data-stage="${st.name}"]`);
    if (cb && !cb.matches(":focus")) cb.checked = st.on;
  }
}

function drawHistogram(h) {
  const cv = $("hist");
  const g = cv.getContext("2d");
  g.clearRect(0, 0, cv.width, cv.height);
  const chans = [["r", "rgba(255,80,80,0.85)"], ["g", "rgba(80,220,80,0.85)"], ["b", "rgba(90,140,255,0.85)"]];
  let max = 1;
  for (const [k] of chans) for (const v of h[k]) max = Math.max(max, v);
  const scale = (v) => (Math.log1p(v) / Math.log1p(max)) * (cv.height - 4);
  const bw = cv.width / h.r.length;
  g.globalCompositeOperation = "lighter";
  for (const [k, colour] of chans) {
    g.strokeStyle = colour;
    g.beginPath();
    h[k].forEach((v, i) => {
      const x = i * bw + bw / 2;
      const y = cv.height - scale(v);
      if (i === 0) g.moveTo(x, y);
      else g.lineTo(x, y);
    });
    g.stroke();
  }
  g.globalCompositeOperation = "source-over";
  const xw = (h.white_level / (h.max_code + 1)) * cv.width;
  g.strokeStyle = "#ffcc00";
  g.setLineDash([4, 4]);
  g.beginPath();
  g.moveTo(xw, 0);
  g.lineTo(xw, cv.height);
  g.stroke();
  g.setLineDash([]);
  const p = (a) => a.map((v) => v.toFixed(2) + "%").join(" / ");
  $("clip").textContent = `clipped (≥ ${h.white_level}) R/G/B: ${p(h.clipped_pct)} · at black (≤ ${h.black_level}): ${p(h.crushed_pct)} · log scale`;
}

function renderTimings(v) {
  const body = $("timings").tBodies[0];
  body.innerHTML = "";
  const add = (k, val) => {
    const tr = body.insertRow();
    tr.insertCell().textContent = k;
    tr.insertCell().textContent = val;
  };
  add("stages run", v.stages.join(" → "));
  for (const [k, ms] of Object.entries(v.stages_ms)) add(`  ${k}`, `${fmt(ms, 2)} ms`);
  add("ISP total", `${fmt(v.isp_ms, 1)} ms`);
  add("preview", `${v.preview[0]} × ${v.preview[1]} JPEG, ${(v.jpeg_bytes / 1024).toFixed(0)} KiB, ${fmt(v.jpeg_ms, 1)} ms`);
  add("WB gains", v.wb_gains.map((g) => g.toFixed(3)).join(" / "));
}

function showImage(blob) {
  const v = pendingView;
  pendingView = null;
  if (paused || !v) return;
  const url = URL.createObjectURL(blob);
  const img = $("view");
  img.onload = () => {
    if (lastUrl) URL.revokeObjectURL(lastUrl);
    lastUrl = url;
  };
  img.src = url;
  img.hidden = false;
  img.dataset.seq = v.seq;
  lastView = v;
  shownTimes.push(performance.now());
  $("waiting").hidden = true;
  $("shown-seq").textContent = `showing seq ${v.seq}`;
  drawHistogram(v.histogram);
  renderTimings(v);
  renderSettings(v.settings);
  if (zoomAt) refreshZoom();
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  setBadge($("conn"), "connecting…", "wait");
  ws = new WebSocket(`${proto}//${location.host}${api("/ws")}`);
  ws.binaryType = "blob";
  ws.onopen = () => {
    retryMs = 500;
    setBadge($("conn"), "connected", "ok");
    // A new connection holds nothing yet: a paused page asks again, naming the pin it
    // held, which the receiver keeps for a while after a connection goes.
    if (paused) sendPause();
  };
  ws.onmessage = (e) => {
    if (typeof e.data === "string") {
      const m = JSON.parse(e.data);
      if (m.type === "stats") renderStats(m);
      else if (m.type === "view") pendingView = m;
      else if (m.type === "paused" && paused) {
        pin = m.pin;
        setDownloads();
        // The server held another frame than the one on screen (it no longer had it):
        // show the held one, so that the picture and the downloads agree.
        if (pin !== null && (!lastView || m.seq !== lastView.seq)) showPinned(m.seq);
      }
    } else {
      showImage(e.data);
    }
  };
  ws.onclose = () => {
    setBadge($("conn"), `disconnected, retrying in ${(retryMs / 1000).toFixed(1)} s`, "bad");
    const wasFor = streamId;
    setTimeout(() => {
      if (wasFor === streamId) connect();
    }, retryMs);
    retryMs = Math.min(retryMs * 2, 8000);
  };
  ws.onerror = () => {}; // onclose follows and reports it
}

async function change(body) {
  const err = $("isp-error");
  try {
    const r = await fetch(api("/isp"), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await r.text();
    if (!r.ok) {
      err.textContent = text.trim();
      err.hidden = false;
      if (lastStats) renderSettings(lastStats.settings);
      return;
    }
    err.hidden = true;
    renderSettings(JSON.parse(text));
  } catch (e) {
    err.textContent = `cannot reach the receiver: ${e}`;
    err.hidden = false;
  }
}

function refreshZoom() {
  if (!zoomAt || zoomLoading) return;
  zoomLoading = true;
  const img = $("zoom-img");
  img.onload = img.onerror = () => {
    zoomLoading = false;
  };
  const held = pin === null ? "" : `&pin=${pin}`;
  img.src = api(`/crop.png?x=${zoomAt.x}&y=${zoomAt.y}&w=256&h=256${held}&t=${Date.now()}`);
  $("zoom-panel").hidden = false;
  $("zoom-caption").textContent = `1:1 crop at (${zoomAt.x}, ${zoomAt.y}), 256 × 256, full resolution`;
}

function sendPause() {
  if (ws && ws.readyState === WebSocket.OPEN) {
    const m = { pause: lastView ? lastView.seq : 0 };
    if (pin !== null) m.pin = pin;
    ws.send(JSON.stringify(m));
  }
}

// Shows the frame the server holds for this paused page (its JPEG by pin).
function showPinned(seq) {
  const img = $("view");
  img.onload = null;
  img.src = api(`/frame.jpg?pin=${pin}`);
  img.hidden = false;
  img.dataset.seq = seq;
  if (lastView) lastView = { ...lastView, seq };
  $("shown-seq").textContent = `paused at seq ${seq}`;
}

// Download links: the frame on screen while paused (its pin), else the newest.
function setDownloads() {
  const held = pin === null ? "" : `?pin=${pin}`;
  for (const k of ["png", "raw", "dng"]) $(`dl-${k}`).href = api(`/frame.${k}${held}`);
}

function setStream(id) {
  streamId = id;
  lastView = null;
  pin = null;
  zoomAt = null;
  $("zoom-panel").hidden = true;
  $("view").hidden = true;
  setDownloads();
  if (ws) {
    ws.onclose = null;
    ws.close();
  }
  connect();
}

async function init() {
  $("pause").addEventListener("click", () => {
    paused = !paused;
    $("pause").textContent = paused ? "Resume" : "Pause";
    // The server holds the frame on screen for the downloads until the page resumes.
    if (paused) {
      sendPause(); // or, if the socket is not open yet, once it opens
    } else {
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ resume: true }));
      pin = null;
      setDownloads();
    }
    $("shown-seq").textContent = paused && lastView ? `paused at seq ${lastView.seq}` : "";
  });
  $("profile").addEventListener("change", (e) => change({ profile: e.target.value }));
  $("demosaic").addEventListener("change", (e) => change({ demosaic: e.target.value }));
  $("reset").addEventListener("click", () => change({ reset: true }));
  $("zoom").addEventListener("change", (e) => {
    $("view").classList.toggle("zooming", e.target.checked);
    if (!e.target.checked) {
      zoomAt = null;
      $("zoom-panel").hidden = true;
    }
  });
  $("view").addEventListener("click", (e) => {
    if (!$("zoom").checked || !lastView) return;
    const r = e.target.getBoundingClientRect();
    const fx = lastView.width / r.width;
    const fy = lastView.height / r.height;
    zoomAt = {
      x: Math.max(0, Math.round((e.clientX - r.left) * fx) - 128),
      y: Math.max(0, Math.round((e.clientY - r.top) * fy) - 128),
    };
    refreshZoom();
  });
  $("stream").addEventListener("change", (e) => setStream(Number(e.target.value)));
  try {
    const r = await fetch("/api/streams");
    const { streams } = await r.json();
    for (const s of streams) {
      const o = document.createElement("option");
      o.value = s.id;
      o.textContent = `${s.id}: ${s.name}`;
      $("stream").append(o);
    }
  } catch (e) {
    setBadge($("conn"), `cannot list streams: ${e}`, "bad");
  }
  setStream(0);
  // Keep "fps shown" honest while paused or stalled.
  setInterval(() => {
    if (lastStats) $("fps-shown").textContent = fmt(paused ? 0 : fpsShown());
  }, 1000);
}

init();
