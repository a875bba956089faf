// attribuo Insights page: plain JavaScript, no build step, nothing loaded from the network.
// It reads the configuration (classes, models, methods and their arguments) from
// api/config, sends the chosen settings to api/fetch or api/attribute, and draws the
// JSON it gets back: heat maps in canvases, coloured tokens, bars.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = { config: null, examples: [], busy: false };

  function element(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children || []) node.appendChild(child);
    return node;
  }

  // ----- talking to the server -----------------------------------------------------

  async function call(path, body) {
    const options = body === undefined ? {} : {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    };
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

  async function busy(work) {
    if (state.busy) return;
    state.busy = true;
    document.body.dataset.state = "busy";
    showError(null);
    $("spinner").hidden = false;
    $("fetch").disabled = true;
    $("recompute").disabled = true;
    try {
      await work();
    } catch (err) {
      showError(err.message);
    } finally {
      state.busy = false;
      $("spinner").hidden = true;
      $("fetch").disabled = false;
      $("recompute").disabled = state.examples.length === 0;
      document.body.dataset.state = "idle";
    }
  }

  function showError(message) {
    $("error").hidden = !message;
    $("error").textContent = message ? "Error: " + message : "";
  }

  // ----- the form --------------------------------------------------------------------

  function buildForm(config) {
    const filter = $("class-filter");
    filter.replaceChildren();
    config.classes.forEach((name) => {
      const box = element("input", { type: "checkbox", value: name, name: "class" });
      filter.appendChild(element("label", { "data-class": name }, [box, document.createTextNode(name)]));
    });
    $("prediction").replaceChildren(...config.predictions.map((p) => element("option", { value: p, text: p })));
    $("model").replaceChildren(...config.models.map((m, i) => element("option", { value: String(i), text: `${i}: ${m}` })));
    $("method").replaceChildren(...config.methods.map((m) => element("option", { value: m.id, text: m.label })));
    if (config.methods.some((m) => m.id === config.selected_method)) $("method").value = config.selected_method;
    $("num-examples").max = String(config.max_examples);
    buildArguments();
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
      box.appendChild(element("label", { className: "row", for: input.id }, [document.createTextNode(arg.name), input]));
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

  function settings() {
    return {
      model: Number($("model").value),
      method: $("method").value,
      arguments: readArguments(),
    };
  }

  // ----- requests --------------------------------------------------------------------

  function fetchExamples() {
    return busy(async () => {
      const count = Number($("num-examples").value);
      const body = {
        ...settings(),
        classes: [...$("class-filter").querySelectorAll("input:checked")].map((b) => b.value),
        prediction: $("prediction").value,
        num_examples: Number.isInteger(count) ? count : $("num-examples").value,
      };
      const data = await call("api/fetch", body);
      state.examples = data.examples;
      render(body.method);
    });
  }

  function recompute(only) {
    return busy(async () => {
      const body = settings();
      const chosen = only ? [only] : state.examples.map((e) => ({ id: e.id, target: e.target.index }));
      const data = await call("api/attribute", { ...body, examples: chosen });
      const fresh = new Map(data.examples.map((e) => [e.id, e]));
      state.examples = state.examples.map((e) => fresh.get(e.id) || e);
      render(body.method);
    });
  }

  // ----- drawing ---------------------------------------------------------------------

  function render(method) {
    const results = $("results");
    results.replaceChildren();
    results.dataset.method = method;
    results.dataset.count = String(state.examples.length);
    if (state.examples.length === 0) {
      results.appendChild(element("p", { className: "empty", text: "No examples match these filters." }));
      return;
    }
    state.examples.forEach((example) => results.appendChild(card(example)));
  }

  function card(example) {
    const truth = example.actual
      ? element("div", { className: "truth" }, [document.createTextNode("True label "), element("b", { text: example.actual.label })])
      : element("div", { className: "truth", text: "No label" });
    const labels = element("div", { className: "labels" }, [
      truth,
      element("h3", { text: "Predicted (click to attribute to a class)" }),
      ...example.predicted.map((p) => predictionRow(example, p)),
    ]);
    const features = element("div", { className: "features" }, example.features.map(feature));
    return element("article", { className: "card", "data-id": String(example.id) }, [labels, features]);
  }

  function predictionRow(example, p) {
    const classes = ["prediction"];
    if (p.index === example.target.index) classes.push("active");
    if (example.actual && p.index === example.actual.index) classes.push("correct");
    const bar = element("div", { className: "bar" }, [element("div", { style: `width:${Math.max(0, Math.min(1, p.score)) * 100}%` })]);
    const row = element("div", { className: classes.join(" "), title: `Attribute to class ${p.label}`, "data-class": p.label }, [
      element("span", { className: "label", text: p.label }),
      bar,
      element("span", { className: "pct", text: `${(p.score * 100).toFixed(1)}%` }),
    ]);
    row.addEventListener("click", () => recompute({ id: example.id, target: p.index }));
    return row;
  }

  function feature(f) {
    const caption = element("div", {
      className: "caption",
      text: `${f.name}: ${(f.contribution * 100).toFixed(0)}% of net attribution`,
    });
    const draw = { image: imageFeature, text: textFeature, general: generalFeature }[f.type];
    const body = draw ? draw(f) : element("div", { className: "empty", text: "(not shown)" });
    return element("div", { className: `feature feature-${f.type}` }, [caption, body]);
  }

  function greyOrRgb(base, i) {
    const p = base.pixels;
    return base.channels === 3 ? [p[3 * i], p[3 * i + 1], p[3 * i + 2]] : [p[i], p[i], p[i]];
  }

  function canvasFrom(width, height, pixel, className) {
    const small = element("canvas", { width: String(width), height: String(height) });
    const ctx = small.getContext("2d");
    const image = ctx.createImageData(width, height);
    for (let i = 0; i < width * height; i++) {
      const [r, g, b] = pixel(i);
      image.data.set([r, g, b, 255], 4 * i);
    }
    ctx.putImageData(image, 0, 0);
    const scale = Math.max(1, Math.floor(160 / Math.max(width, height)));
    const big = element("canvas", { width: String(width * scale), height: String(height * scale), className });
    const bctx = big.getContext("2d");
    bctx.imageSmoothingEnabled = false;
    bctx.drawImage(small, 0, 0, width * scale, height * scale);
    return big;
  }

  function heatColour(value, under) {
    // red for positive, blue for negative attribution, over a faded image
    const a = Math.min(1, Math.abs(value)) * 0.9;
    const colour = value >= 0 ? [220, 38, 38] : [37, 99, 235];
    return under.map((u, k) => Math.round((1 - a) * (255 - 0.4 * (255 - u)) + a * colour[k]));
  }

  function imageFeature(f) {
    const { width, height } = f.base;
    const original = canvasFrom(width, height, (i) => greyOrRgb(f.base, i), "original");
    const heat = canvasFrom(width, height, (i) => heatColour(f.modified.values[i], greyOrRgb(f.base, i)), "heatmap");
    heat.dataset.scale = String(f.modified.scale);
    return element("div", {}, [
      element("div", { className: "images" }, [
        element("figure", {}, [original, element("figcaption", { text: "input" })]),
        element("figure", {}, [heat, element("figcaption", { text: "attribution" })]),
      ]),
      element("div", { className: "legend", text: `red: for the class, blue: against; max |attribution| ${f.modified.scale.toPrecision(3)}` }),
    ]);
  }

  function textFeature(f) {
    return element("div", { className: "tokens" }, f.base.map((token, i) => {
      const v = (f.modified[i] || 0) / 100;
      const colour = v >= 0 ? `rgba(220,38,38,${Math.abs(v) * 0.8})` : `rgba(37,99,235,${Math.abs(v) * 0.8})`;
      return element("span", { style: `background:${colour}`, title: `${(v * 100).toFixed(1)}` , text: token });
    }));
  }

  function generalFeature(f) {
    const rows = [];
    f.base.forEach((name, i) => {
      const v = Math.max(-100, Math.min(100, f.modified[i] || 0));
      const left = v >= 0 ? 50 : 50 + v / 2;
      const fill = element("div", { style: `left:${left}%;width:${Math.abs(v) / 2}%;background:${v >= 0 ? "#dc2626" : "#2563eb"}` });
      rows.push(element("span", { text: name }), element("div", { className: "track", title: v.toFixed(1) }, [fill]));
    });
    return element("div", { className: "bars" }, rows);
  }

  // ----- start -------------------------------------------------------------------------

  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    fetchExamples();
  });
  $("recompute").addEventListener("click", () => recompute(null));
  $("method").addEventListener("change", buildArguments);

  busy(async () => {
    state.config = await call("api/config");
    buildForm(state.config);
  });
})();
