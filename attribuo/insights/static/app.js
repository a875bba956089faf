// attribuo Insights page: plain JavaScript, no build step, nothing loaded from the network.
// It reads the configuration (classes, models, methods and their arguments) from
// api/config, runs fetch and attribute requests as jobs (api/jobs, polled for progress,
// cancellable) and draws the examples with cards.js.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const { element, card, describe } = window.InsightsCards;
  const state = { config: null, examples: [], busy: false, job: null, method: "" };
  const madeWith = new WeakMap(); // result -> the form settings its request was sent with
  const POLL_MS = 250;
  const PROGRESS_AFTER_MS = 1000; // fast requests only flash the spinner

  class Cancelled extends Error {}

  // ----- talking to the server -----------------------------------------------------

  async function call(path, body, method) {
    const options = { method: method || (body === undefined ? "GET" : "POST") };
    if (body !== undefined) {
      options.headers = { "Content-Type": "application/json" };
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch (err) {
      throw new Error("The server cannot be reached: " + err.message);
    }
    let data;
    try {
      data = await response.json();
    } catch (err) {
      throw new Error(`The server answered ${response.status} without JSON`);
    }
    if (!response.ok) throw new Error(data.error || `Request failed (${response.status})`);
    return data;
  }

  // Runs one fetch/attribute request as a job and polls it; resolves to its examples.
  async function runJob(kind, request) {
    const started = performance.now();
    const created = await call("api/jobs", { kind, request });
    const job = { id: created.id, cancelled: false, wake: null };
    state.job = job;
    $("cancel").hidden = false;
    $("cancel").disabled = false;
    try {
      let status = created;
      let delay = 60; // a quick first look: small requests finish at once
      while (!["done", "failed", "cancelled"].includes(status.state)) {
        await pause(delay, job);
        delay = POLL_MS;
        if (job.cancelled) throw new Cancelled();
        status = await call(`api/jobs/${encodeURIComponent(job.id)}`);
        if (job.cancelled) throw new Cancelled();
        showProgress(status, performance.now() - started);
      }
      if (status.state === "done") return status.examples;
      if (status.state === "cancelled") throw new Cancelled();
      throw new Error(status.error || "the request failed");
    } finally {
      state.job = null;
      $("cancel").hidden = true;
    }
  }

  function pause(ms, job) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      job.wake = () => { clearTimeout(timer); resolve(); };
    });
  }

  function cancelJob() {
    const job = state.job;
    if (!job || job.cancelled) return;
    job.cancelled = true;
    $("cancel").disabled = true;
    // the page stops waiting at once; the server stops at its next model evaluation
    fetch(`api/jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" }).catch(() => {});
    if (job.wake) job.wake();
  }

  function showProgress(status, elapsedMs) {
    if (elapsedMs < PROGRESS_AFTER_MS) return;
    $("progress").hidden = false;
    const total = status.total || 0;
    const done = Math.min(status.done || 0, total);
    const bar = $("progress-bar");
    if (total > 0) {
      bar.max = total;
      bar.value = done;
    } else bar.removeAttribute("value"); // indeterminate until the job knows its size
    $("progress-text").textContent = total > 0 ? `${done} / ${total}` : status.state === "queued" ? "queued" : "starting";
  }

  async function busy(work) {
    if (state.busy) return;
    state.busy = true;
    document.body.dataset.state = "busy";
    showError(null);
    showNotice(null);
    $("spinner").hidden = false;
    $("progress").hidden = true;
    $("progress-text").textContent = "";
    $("fetch").disabled = true;
    $("recompute").disabled = true;
    try {
      await work();
    } catch (err) {
      if (err instanceof Cancelled) showNotice("Cancelled. The examples shown are from before.");
      else showError(err.message);
    } finally {
      state.busy = false;
      $("spinner").hidden = true;
      $("fetch").disabled = false;
      $("recompute").disabled = state.examples.length === 0;
      markStale();
      document.body.dataset.state = "idle";
    }
  }

  function showError(message) {
    $("error").hidden = !message;
    $("error").textContent = message ? "Error: " + message : "";
  }

  function showNotice(message) {
    $("notice").hidden = !message;
    $("notice").textContent = message || "";
  }

  // ----- the form --------------------------------------------------------------------

  function buildForm(config) {
    const filter = $("class-filter");
    filter.replaceChildren(...config.classes.map((name) => {
      const box = element("input", { type: "checkbox", value: name, name: "class" });
      return element("label", { "data-class": name, title: name }, [box, name]);
    }));
    $("prediction").replaceChildren(...config.predictions.map((p) => element("option", { value: p, text: p })));
    const models = $("model");
    models.querySelectorAll("label").forEach((l) => l.remove());
    config.models.forEach((name, i) => {
      const box = element("input", { type: "checkbox", name: "model", value: String(i) });
      box.checked = true;
      models.appendChild(element("label", { className: "model-choice", title: name }, [box, name]));
    });
    models.hidden = config.models.length < 2; // one model: nothing to choose
    $("method").replaceChildren(...config.methods.map((m) => element("option", { value: m.id, text: m.label })));
    if (config.methods.some((m) => m.id === config.selected_method)) $("method").value = config.selected_method;
    $("num-examples").max = String(config.max_examples);
    buildArguments();
    updateClassInfo();
  }

  function filterClasses() {
    const query = $("class-search").value.trim().toLowerCase();
    for (const chip of $("class-filter").querySelectorAll("label")) {
      chip.hidden = query !== "" && !chip.dataset.class.toLowerCase().includes(query);
    }
  }

  function updateClassInfo() {
    const chosen = chosenClasses().length;
    $("class-count").textContent = chosen ? `${chosen} of ${state.config.classes.length} chosen` : "all classes";
    $("class-clear").hidden = chosen === 0;
  }

  function chosenClasses() {
    return [...$("class-filter").querySelectorAll("input:checked")].map((b) => b.value);
  }

  function currentMethod() {
    return state.config.methods.find((m) => m.id === $("method").value);
  }

  function buildArguments() {
    const box = $("arguments");
    box.replaceChildren();
    const method = currentMethod();
    if (!method) return;
    for (const arg of method.arguments) {
      let input;
      if (arg.type === "enum") {
        input = element("select", {}, arg.choices.map((c) => element("option", { value: c, text: c })));
        input.value = arg.default;
      } else if (arg.type === "bool") {
        input = element("input", { type: "checkbox" });
        input.checked = Boolean(arg.default);
      } else if (arg.type === "shape") {
        input = element("input", { type: "text", placeholder: "auto" });
        input.value = arg.default;
      } else {
        input = element("input", { type: "number", step: arg.type === "int" ? "1" : "any" });
        if (arg.min !== null) input.min = String(arg.min);
        if (arg.max !== null) input.max = String(arg.max);
        input.value = String(arg.default);
      }
      input.dataset.arg = arg.name;
      input.dataset.type = arg.type;
      input.id = "arg-" + arg.name;
      box.appendChild(element("label", { className: "row", for: input.id }, [arg.name, input]));
      let hint = arg.help || "";
      if (arg.min !== null || arg.max !== null) hint += ` (${arg.min ?? ""} to ${arg.max ?? ""})`;
      if (hint) box.appendChild(element("div", { className: "hint", text: hint }));
    }
  }

  function readArguments() {
    const args = {};
    for (const input of $("arguments").querySelectorAll("[data-arg]")) {
      const type = input.dataset.type;
      if (type === "bool") args[input.dataset.arg] = input.checked;
      else if (type === "int" || type === "float") {
        const text = input.value.trim();
        const value = Number(text);
        if (text === "" || !Number.isFinite(value)) throw new Error(`argument \`${input.dataset.arg}\` must be a number`);
        args[input.dataset.arg] = value;
      } else args[input.dataset.arg] = input.value;
    }
    return args;
  }

  function selectedModels() {
    return [...$("model").querySelectorAll("input:checked")].map((b) => Number(b.value));
  }

  function settings() {
    const models = selectedModels();
    if (models.length === 0) throw new Error("choose at least one model");
    return { models, method: $("method").value, arguments: readArguments() };
  }

  // ----- requests --------------------------------------------------------------------

  function fetchExamples() {
    return busy(fetchNow);
  }

  async function fetchNow() {
    const count = Number($("num-examples").value);
    const body = {
      ...settings(),
      target: $("target").value,
      classes: chosenClasses(),
      prediction: $("prediction").value,
      num_examples: Number.isInteger(count) ? count : $("num-examples").value,
    };
    const examples = await runJob("fetch", body);
    state.examples = examples.map((e) => remember(e, body, body.target));
    state.method = body.method;
    render();
  }

  // only: {id, target} for one card (a class clicked, or its Label button); null: every card
  function recompute(only) {
    return busy(async () => {
      const body = settings();
      const formTarget = $("target").value;
      const chosen = only ? [only] : state.examples.map((e) => ({ id: e.id, target: keptTarget(e, formTarget) }));
      const examples = await runJob("attribute", { ...body, examples: chosen });
      const targets = new Map(chosen.map((c) => [c.id, c.target]));
      const fresh = new Map(examples.map((e) => [e.id, remember(e, body, targets.get(e.id))]));
      state.examples = state.examples.map((e) => fresh.get(e.id) || e);
      state.method = body.method;
      render();
    });
  }

  // a class picked on a card stays picked; otherwise the form's target applies
  function keptTarget(example, formTarget) {
    const sent = madeWith.get(example.results[0]);
    return sent && typeof sent.target === "number" ? sent.target : formTarget;
  }

  function remember(example, body, target) {
    for (const result of example.results) {
      madeWith.set(result, { method: body.method, arguments: body.arguments, target, models: body.models });
    }
    return example;
  }

  // ----- drawing and state shown -----------------------------------------------------

  const SORTS = {
    confidence: (e) => (e.results[0] && e.results[0].predicted[0] ? e.results[0].predicted[0].score : 0),
    mass: (e) => (e.results[0] ? e.results[0].mass || 0 : 0),
  };

  function sorted(examples) {
    const [key, direction] = $("sort").value.split("-");
    if (!SORTS[key]) return examples;
    const sign = direction === "asc" ? 1 : -1;
    return [...examples].sort((a, b) => sign * (SORTS[key](a) - SORTS[key](b)));
  }

  const actions = {
    attribute: (example, target) => recompute({ id: example.id, target }),
    exportJsonUrl: (example, result) => `api/examples/${encodeURIComponent(example.id)}/export?model=${encodeURIComponent(result.model)}`,
    get config() { return state.config; },
  };

  function render() {
    const results = $("results");
    results.replaceChildren();
    results.dataset.method = state.method;
    results.dataset.count = String(state.examples.length);
    results.dataset.sort = $("sort").value;
    if (state.examples.length === 0) {
      results.appendChild(element("p", { className: "empty", text: "No examples match these filters." }));
      return;
    }
    sorted(state.examples).forEach((example) => results.appendChild(card(example, actions)));
    markStale();
  }

  function sameValue(a, b) {
    const norm = (v) => (typeof v === "string" ? v.replace(/\s+/g, "") : v);
    return JSON.stringify(norm(a)) === JSON.stringify(norm(b));
  }

  // What differs between the form now and the settings a result was made with, or null.
  function staleness(sent, form) {
    if (!sent) return null;
    if (!form) return "settings";
    const keys = new Set([...Object.keys(sent.arguments || {}), ...Object.keys(form.arguments)]);
    const argsDiffer = [...keys].some((k) => !sameValue((sent.arguments || {})[k], form.arguments[k]));
    if (sent.method !== form.method || argsDiffer) return "method";
    if (typeof sent.target === "string" && sent.target !== form.target) return "target";
    if (sent.models.join() !== form.models.join()) return "models";
    return null;
  }

  function markStale() {
    let form = null;
    try {
      form = { ...settings(), target: $("target").value };
    } catch (err) {
      form = null; // half-typed arguments: every card counts as made otherwise
    }
    const byId = new Map(state.examples.map((e) => [String(e.id), e]));
    for (const node of $("results").querySelectorAll("article.card")) {
      const example = byId.get(node.dataset.id);
      if (!example) continue;
      const reasons = new Set();
      node.querySelectorAll("section.result").forEach((column, i) => {
        const why = staleness(madeWith.get(example.results[i]), form);
        column.classList.toggle("stale", why !== null);
        if (why) reasons.add(why);
      });
      node.classList.toggle("stale", reasons.size > 0);
      const note = node.querySelector(".stale-note");
      note.hidden = reasons.size === 0;
      note.textContent = reasons.size ? staleText(example, reasons) : "";
    }
  }

  function staleText(example, reasons) {
    const made = [...new Set(example.results.map(describe))].join(" / ");
    const parts = [`made with ${made}`];
    if (reasons.has("target")) parts.push(`target: ${madeWith.get(example.results[0]).target === "label" ? "true label" : "predicted class"}`);
    if (reasons.has("models")) parts.push(`models: ${example.results.map((r) => window.InsightsCards.modelName(r, state.config)).join(", ")}`);
    return `Not the settings above: ${parts.join("; ")}. Press Recompute.`;
  }

  // ----- start -------------------------------------------------------------------------

  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    fetchExamples();
  });
  $("recompute").addEventListener("click", () => recompute(null));
  $("cancel").addEventListener("click", cancelJob);
  $("method").addEventListener("change", buildArguments);
  $("controls").addEventListener("input", () => markStale());
  $("controls").addEventListener("change", () => { updateClassInfo(); markStale(); });
  $("class-search").addEventListener("input", filterClasses);
  $("class-clear").addEventListener("click", () => {
    $("class-filter").querySelectorAll("input:checked").forEach((b) => { b.checked = false; });
    updateClassInfo();
  });
  $("sort").addEventListener("change", () => { if (state.examples.length) render(); });
  window.addEventListener("pagehide", () => {
    if (state.job) navigator.sendBeacon(`api/jobs/${encodeURIComponent(state.job.id)}/cancel`);
  });

  // a first batch with the default settings, so that the page does not open empty
  busy(async () => {
    state.config = await call("api/config");
    buildForm(state.config);
    await fetchNow();
  });
})();
