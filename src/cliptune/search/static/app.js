// The search page: ask /search (or /search/image) and lay the hits out as a grid. Same-origin requests only; every
// text from the server goes in through textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

function say(text, isError = false) {
  const message = $("message");
  message.textContent = text;
  message.classList.toggle("error", isError);
}

async function readJson(response) {
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const detail = body && body.detail;
    const text = typeof detail === "string" ? detail
      : Array.isArray(detail) ? detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ")
      : `HTTP ${response.status}`;
    throw new Error(text);
  }
  return body;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Bars show where a score lies between the lowest and highest of this result set (10%..100% of the width): cosine
// similarities of one query's top hits often differ only in the second decimal, and bars of the raw value would all
// look alike. The number shows the raw cosine.
function barWidth(score, low, high) {
  if (!(high > low)) return 100;
  return 10 + 90 * (score - low) / (high - low);
}

function card(hit, low, high) {
  const figure = el("figure", "hit");
  figure.dataset.id = hit.id;
  const link = el("a");
  link.href = hit.image_url;
  link.target = "_blank";
  link.rel = "noopener";
  const img = el("img");
  img.src = hit.thumbnail_url;
  img.alt = hit.captions[0] || hit.name;
  img.loading = "lazy";
  link.appendChild(img);
  figure.appendChild(link);
  const caption = el("figcaption");
  const head = el("div");
  head.appendChild(el("span", "rank", `#${hit.rank}`));
  head.appendChild(el("span", "score", hit.score.toFixed(3)));
  caption.appendChild(head);
  const bar = el("div", "bar");
  const fill = el("i");
  fill.style.width = `${barWidth(hit.score, low, high).toFixed(1)}%`;
  bar.title = `cosine ${hit.score.toFixed(4)}; the bar spans this result set's range`;
  bar.appendChild(fill);
  caption.appendChild(bar);
  caption.appendChild(el("div", "name", hit.name));
  if (hit.captions.length) caption.appendChild(el("div", "caption", hit.captions[0]));
  caption.title = [hit.name, ...hit.captions].join("\n");
  figure.appendChild(caption);
  return figure;
}

function emptyState(title, hint) {
  const box = el("div", "empty");
  box.id = "empty";
  box.appendChild(el("strong", null, title));
  box.appendChild(el("span", null, hint));
  return box;
}

function clearResults(title, hint) {
  $("results").replaceChildren(emptyState(title, hint));
}

function showQueryImage(file) {
  const preview = $("query-preview");
  const img = $("query-image");
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  if (!file) {
    preview.hidden = true;
    img.removeAttribute("src");
    return;
  }
  img.src = URL.createObjectURL(file);
  $("query-name").textContent = file.name;
  preview.hidden = false;
}

function show(result, label, started) {
  const scores = result.hits.map((hit) => hit.score);
  const low = Math.min(...scores), high = Math.max(...scores);
  const ms = Math.round(performance.now() - started);
  if (!result.hits.length) {
    clearResults("No results", result.count ? "try other words" : "the index is empty: add images with cliptune index --add");
    say(`no results for ${label}`);
    return;
  }
  $("results").replaceChildren(...result.hits.map((hit) => card(hit, low, high)));
  say(`${result.hits.length} of ${result.count} images for ${label} (${ms} ms)`);
}

async function run(request, label) {
  const button = $("go");
  button.disabled = true;
  say("searching…");
  const started = performance.now();
  try {
    show(await readJson(await request()), label, started);
  } catch (err) {
    clearResults("No results", "the search failed; see the message above");
    say(err.message, true);
  } finally {
    button.disabled = false;
  }
}

function searchText(event) {
  if (event) event.preventDefault();
  const q = $("q").value.trim();
  showQueryImage(null);
  if (!q) {
    clearResults("Nothing searched yet", "describe a picture, or choose one to search by image");
    say("type what you are looking for", true);
    return;
  }
  const k = $("k").value;
  history.replaceState(null, "", `?q=${encodeURIComponent(q)}&k=${k}`);
  run(() => fetch(`/search?q=${encodeURIComponent(q)}&k=${k}`), `“${q}”`);
}

function searchImage() {
  const file = $("image-query").files[0];
  if (!file) return;
  showQueryImage(file);
  const form = new FormData();
  form.append("file", file);
  form.append("k", $("k").value);
  run(() => fetch("/search/image", { method: "POST", body: form }), file.name);
}

async function status() {
  try {
    const health = await readJson(await fetch("/health"));
    $("status").textContent = health.index
      ? `model ${health.model} · ${health.index.count} images indexed (${health.index.ann})`
      : `model ${health.model} · no index loaded (start the server with --index to search)`;
  } catch (err) {
    $("status").textContent = `server unreachable: ${err.message}`;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", searchText);
  $("image-query").addEventListener("change", searchImage);
  clearResults("Nothing searched yet", "describe a picture, or choose one to search by image");
  status();
  const params = new URLSearchParams(location.search);
  if ([...$("k").options].some((option) => option.value === params.get("k"))) $("k").value = params.get("k");
  if (params.get("q")) { $("q").value = params.get("q"); searchText(); }
});
