/// The page at `/`: one self-contained HTML file (no CDN, no build step) that talks to the
/// A1111 API of the same server, so it works offline on a LAN and from a phone.
enum WebPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PocketDiffusion</title>
<style>
  :root { --accent: #ea580c; --bg: #f8fafc; --card: #fff; --line: #e2e8f0; --text: #0f172a; --muted: #64748b; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background: var(--bg); color: var(--text); }
  main { max-width: 960px; margin: 0 auto; padding: 16px; }
  h1 { font-size: 1.5rem; margin: 8px 0 2px; }
  .sub { color: var(--muted); margin: 0 0 16px; }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 14px; margin-bottom: 14px; }
  .row { display: flex; gap: 8px; }
  .row > * { flex: 1; }
  textarea, input, select { width: 100%; font: inherit; padding: 9px 10px; border: 1px solid var(--line); border-radius: 8px; background: #fff; color: var(--text); }
  textarea { resize: vertical; min-height: 48px; }
  label { display: block; font-size: .85rem; color: var(--muted); margin: 8px 0 3px; }
  button { font: inherit; font-weight: 600; border: 0; border-radius: 8px; padding: 10px 18px; cursor: pointer; }
  #generate { background: var(--accent); color: #fff; flex: 0 0 auto; }
  #generate:disabled { opacity: .5; cursor: default; }
  #cancel { background: #e2e8f0; color: var(--text); flex: 0 0 auto; }
  details summary { cursor: pointer; color: var(--muted); margin-top: 10px; }
  .grid { display: grid; grid-template-columns: repeat(3, 1fr); gap: 0 10px; }
  #status { display: none; }
  .bar { height: 8px; border-radius: 4px; background: var(--line); overflow: hidden; margin: 8px 0; }
  .bar > div { height: 100%; width: 0; background: var(--accent); transition: width .3s; }
  #preview { width: 128px; height: 128px; image-rendering: pixelated; border-radius: 8px; background: var(--line); display: none; }
  #error { display: none; background: #fef2f2; border-color: #fecaca; color: #991b1b; }
  #gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; }
  figure { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 12px; overflow: hidden; }
  figure img { display: block; width: 100%; height: auto; }
  figcaption { padding: 8px 10px; font-size: .8rem; color: var(--muted); word-break: break-word; }
  figcaption a { color: var(--accent); font-weight: 600; }
  @media (max-width: 560px) { .grid { grid-template-columns: 1fr 1fr; } .row.stack { flex-direction: column; } main { padding: 10px; } }
</style>
</head>
<body>
<main>
  <h1>PocketDiffusion</h1>
  <p class="sub">Stable Diffusion on this board. <span id="model"></span></p>
  <div class="card">
    <label for="prompt">Prompt</label>
    <div class="row stack">
      <textarea id="prompt" rows="2" placeholder="a watercolor painting of a lighthouse at dawn"></textarea>
      <button id="generate">Generate</button>
    </div>
    <details>
      <summary>Advanced options</summary>
      <label for="negative">Negative prompt</label>
      <textarea id="negative" rows="1" placeholder="blurry, low quality"></textarea>
      <div class="grid">
        <div><label for="images">Images</label><input id="images" type="number" min="1" max="4" value="1"></div>
        <div><label for="steps">Steps</label><input id="steps" type="number" min="1" max="150" value="20"></div>
        <div><label for="guidance">Guidance scale</label><input id="guidance" type="number" min="0" max="30" step="0.5" value="7.5"></div>
        <div><label for="seed">Seed (empty = random)</label><input id="seed" type="number" min="0" placeholder="random"></div>
        <div><label for="width">Width</label><input id="width" type="number" min="64" max="2048" step="8" value="512"></div>
        <div><label for="height">Height</label><input id="height" type="number" min="64" max="2048" step="8" value="512"></div>
      </div>
      <label for="sampler">Scheduler</label>
      <select id="sampler"><option>Euler a</option></select>
    </details>
  </div>
  <div class="card" id="status">
    <div class="row" style="align-items:center">
      <div>
        <div id="statusText">Waiting…</div>
        <div class="bar"><div id="bar"></div></div>
        <div id="timing" class="sub" style="margin:0"></div>
      </div>
      <img id="preview" alt="preview of the current step">
      <button id="cancel">Cancel</button>
    </div>
  </div>
  <div class="card" id="error" role="alert"></div>
  <div id="gallery"></div>
</main>
<script>
"use strict";
const $ = id => document.getElementById(id);
let controller = null, poller = null, started = 0;

function showError(message) {
  $("error").textContent = message;
  $("error").style.display = message ? "block" : "none";
}

async function loadSamplers() {
  try {
    const [samplers, options] = await Promise.all([
      fetch("sdapi/v1/samplers").then(r => r.json()), fetch("sdapi/v1/options").then(r => r.json())]);
    $("sampler").innerHTML = "";
    for (const s of samplers) {
      const o = document.createElement("option");
      o.textContent = s.name;
      $("sampler").appendChild(o);
    }
    $("model").textContent = "Model: " + options.sd_model_checkpoint;
  } catch (e) {
    showError("Could not reach the server: " + e.message);
  }
}

function fmt(seconds) { return seconds < 60 ? seconds.toFixed(1) + " s" : Math.floor(seconds / 60) + " min " + Math.round(seconds % 60) + " s"; }

async function poll() {
  try {
    const p = await fetch("sdapi/v1/progress").then(r => r.json());
    const s = p.state;
    const elapsed = (Date.now() - started) / 1000;
    if (s.sampling_steps > 0) {
      $("statusText").textContent = "Step " + s.sampling_step + " of " + s.sampling_steps + (s.phase ? " (" + s.phase + ")" : "");
      $("bar").style.width = (100 * p.progress).toFixed(1) + "%";
      $("timing").textContent = "elapsed " + fmt(elapsed) + (p.progress > 0 ? " · ETA " + fmt(p.eta_relative) : "");
    } else {
      $("statusText").textContent = s.job_count > 0 ? "Waiting in the queue…" : "Starting…";
      $("timing").textContent = "elapsed " + fmt(elapsed);
    }
    if (p.current_image) {
      $("preview").src = "data:image/png;base64," + p.current_image;
      $("preview").style.display = "block";
    }
  } catch (e) { /* the next poll tries again */ }
}

function addImage(b64, seed, infotext, settings) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.src = "data:image/png;base64," + b64;
  img.alt = settings.prompt;
  const cap = document.createElement("figcaption");
  const link = document.createElement("a");
  link.href = img.src;
  link.download = "pocketsd-" + seed + ".png";
  link.textContent = "Download";
  cap.textContent = "Seed " + seed + " · " + settings.steps + " steps · " + settings.sampler_name + " · CFG " +
    settings.cfg_scale + " · " + settings.width + "×" + settings.height + " ";
  cap.title = infotext;
  cap.appendChild(link);
  fig.append(img, cap);
  $("gallery").prepend(fig);
}

function finish() {
  clearInterval(poller);
  controller = null;
  $("generate").disabled = false;
  $("status").style.display = "none";
  $("preview").style.display = "none";
}

async function generate() {
  const prompt = $("prompt").value.trim();
  if (!prompt) { showError("Write a prompt first."); return; }
  showError("");
  const body = {
    prompt, negative_prompt: $("negative").value,
    steps: Number($("steps").value), cfg_scale: Number($("guidance").value),
    width: Number($("width").value), height: Number($("height").value),
    seed: $("seed").value === "" ? -1 : Number($("seed").value),
    sampler_name: $("sampler").value, batch_size: Number($("images").value), n_iter: 1,
  };
  controller = new AbortController();
  started = Date.now();
  $("generate").disabled = true;
  $("bar").style.width = "0";
  $("statusText").textContent = "Starting…";
  $("status").style.display = "block";
  poller = setInterval(poll, 500);
  try {
    const r = await fetch("sdapi/v1/txt2img", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body), signal: controller.signal });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      showError(data.detail || data.error || ("The server answered " + r.status));
      return;
    }
    const info = JSON.parse(data.info);
    data.images.forEach((b64, i) => addImage(b64, info.all_seeds[i], info.infotexts[i], data.parameters));
  } catch (e) {
    showError(e.name === "AbortError" ? "Cancelled." : "The request failed: " + e.message);
  } finally {
    finish();
  }
}

$("generate").addEventListener("click", generate);
$("prompt").addEventListener("keydown", e => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate(); });
// Aborting the request closes its connection; the server cancels the job at the next step.
$("cancel").addEventListener("click", () => { if (controller) controller.abort(); });
loadSamplers();
</script>
</body>
</html>
"""#
}
