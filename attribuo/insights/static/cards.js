// attribuo Insights: drawing one example as a card (one column per model's result) and
// exporting a result as a PNG. Used by app.js; no network, no inline styles (the page's
// Content-Security-Policy forbids them, so sizes and colours go through element.style).
"use strict";

window.InsightsCards = (function () {
  const POSITIVE = "#dc2626";
  const NEGATIVE = "#2563eb";
  const TARGET_KINDS = { predicted: "predicted class", label: "true label", class: "chosen class" };

  function element(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by the CSP
      else node.setAttribute(key, value);
    }
    for (const child of children || []) node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    return node;
  }

  function formatValue(value) {
    if (Array.isArray(value)) return value.map(formatValue).join(",");
    if (value === null || value === undefined || value === "") return "auto";
    if (typeof value === "number") return String(Number(value.toPrecision(6)));
    return String(value);
  }

  // "Integrated Gradients (n_steps 25, method gausslegendre)"
  function describe(result) {
    const label = result.method_label || result.method || "?";
    const args = Object.entries(result.arguments || {}).map(([k, v]) => `${k} ${formatValue(v)}`);
    return args.length ? `${label} (${args.join(", ")})` : label;
  }

  function modelName(result, config) {
    return result.model_name || (config && config.models[result.model]) || `model ${result.model}`;
  }

  function targetText(result) {
    const t = result.target || {};
    const kind = TARGET_KINDS[t.kind];
    return kind ? `${t.label} (${kind})` : String(t.label);
  }

  // ----- the card --------------------------------------------------------------------

  // actions: {attribute(example, target), exportJsonUrl(example, result), config}
  function card(example, actions) {
    const truth = example.actual
      ? element("div", { className: "truth" }, ["True label ", element("b", { text: example.actual.label })])
      : element("div", { className: "truth", text: "No label" });
    const labelButton = element("button", {
      type: "button", className: "label-target small",
      title: example.actual ? "Attribute to the true label" : "This example has no label",
      text: "Label",
    });
    labelButton.disabled = !example.actual;
    labelButton.addEventListener("click", () => actions.attribute(example, "label"));
    const head = element("div", { className: "card-head" }, [
      element("span", { className: "example-id", text: `Example ${example.id}` }), truth, labelButton,
    ]);
    const note = element("div", { className: "stale-note" });
    note.hidden = true;
    const columns = element("div", { className: "results" }, example.results.map((r) => column(example, r, actions)));
    return element("article", { className: "card", "data-id": String(example.id) }, [head, note, columns]);
  }

  function column(example, result, actions) {
    const name = modelName(result, actions.config);
    const predictions = element("div", { className: "predictions" }, [
      element("h4", { text: "Predicted (click to attribute to a class)" }),
      ...result.predicted.map((p) => predictionRow(example, result, p, actions)),
    ]);
    const contributions = element("div", { className: "contributions" }, [
      element("h4", { text: "Contribution per feature" }),
      element("div", { className: "bars" }, result.features.flatMap((f) => divergingRow(f.name, f.contribution || 0))),
    ]);
    const features = element("div", { className: "features" }, result.features.map(feature));
    const png = element("button", { type: "button", className: "export-png small", text: "PNG", title: "Download this result as an image" });
    png.addEventListener("click", () => exportPng(example, result, node, name));
    const json = element("a", {
      className: "export-json button small", href: actions.exportJsonUrl(example, result),
      download: `example-${example.id}-${safeName(name)}.json`, title: "Download the raw attribution as JSON",
      text: "JSON",
    });
    const node = element("section", {
      className: "result", "data-model": String(result.model), "data-method": result.method,
      "data-target": String(result.target.index), "data-target-kind": result.target.kind || "",
      "data-mass": String(result.mass ?? ""), "data-confidence": String(result.predicted[0] ? result.predicted[0].score : ""),
    }, [
      element("h3", { className: "model-name", text: name, title: name }),
      element("div", { className: "made", text: describe(result), title: result.seconds ? `${result.seconds.toFixed(2)} s` : null }),
      element("div", { className: "target" }, ["Target: ", element("b", { text: targetText(result) })]),
      element("div", { className: "result-body" }, [
        element("div", { className: "scores" }, [predictions, contributions]), features,
      ]),
      element("div", { className: "exports" }, ["Export ", png, json]),
    ]);
    return node;
  }

  function predictionRow(example, result, p, actions) {
    const classes = ["prediction"];
    if (p.index === result.target.index) classes.push("active");
    if (example.actual && p.index === example.actual.index) classes.push("correct");
    const share = Math.max(0, Math.min(1, p.score));
    const bar = element("div", { className: "bar" }, [element("div", { style: { width: `${share * 100}%` } })]);
    const row = element("div", { className: classes.join(" "), title: `Attribute to class ${p.label}`, "data-class": p.label }, [
      element("span", { className: "label", text: p.label, title: p.label }),
      bar,
      element("span", { className: "pct", text: `${(p.score * 100).toFixed(1)}%` }),
    ]);
    row.tabIndex = 0; // rows act as buttons: reachable and usable from the keyboard
    row.setAttribute("role", "button");
    row.addEventListener("click", () => actions.attribute(example, p.index));
    row.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" && event.key !== " ") return;
      event.preventDefault();
      actions.attribute(example, p.index);
    });
    return row;
  }

  // a bar from the middle: right and red for positive, left and blue for negative; share in [-1, 1]
  function divergingRow(name, share, valueText) {
    const v = Math.max(-1, Math.min(1, share));
    const fill = element("div", { className: v >= 0 ? "pos" : "neg", style: { left: `${v >= 0 ? 50 : 50 + v * 50}%`, width: `${Math.abs(v) * 50}%` } });
    return [
      element("span", { className: "name", text: name, title: name }),
      element("div", { className: "track", title: (v * 100).toFixed(1) }, [fill]),
      element("span", { className: "value", text: valueText || `${(share * 100).toFixed(0)}%` }),
    ];
  }

  function feature(f, index) {
    const draw = { image: imageFeature, text: textFeature, general: generalFeature }[f.type];
    const body = draw ? draw(f) : element("div", { className: "empty", text: "(not shown)" });
    return element("div", { className: `feature feature-${f.type}`, "data-index": String(index) }, [
      element("div", { className: "caption", text: f.name }), body,
    ]);
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
      element("div", { className: "legend", text: legendText(f) }),
    ]);
  }

  function legendText(f) {
    return `red: for the class, blue: against; max |attribution| ${f.modified.scale.toPrecision(3)}`;
  }

  function tokenColour(v) {
    return v >= 0 ? `rgba(220,38,38,${Math.abs(v) * 0.8})` : `rgba(37,99,235,${Math.abs(v) * 0.8})`;
  }

  function textFeature(f) {
    return element("div", { className: "tokens" }, f.base.map((token, i) => {
      const v = (f.modified[i] || 0) / 100;
      return element("span", { style: { backgroundColor: tokenColour(v) }, title: (v * 100).toFixed(1), text: token });
    }));
  }

  function generalFeature(f) {
    const rows = f.base.flatMap((name, i) => {
      const v = Math.max(-100, Math.min(100, f.modified[i] || 0));
      return divergingRow(name, v / 100, v.toFixed(1));
    });
    return element("div", { className: "bars" }, rows);
  }

  // ----- PNG export --------------------------------------------------------------------

  function safeName(name) {
    return String(name).replace(/[^A-Za-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "") || "model";
  }

  function fit(ctx, text, width) {
    if (ctx.measureText(text).width <= width) return text;
    let s = text;
    while (s.length > 1 && ctx.measureText(s + "\u2026").width > width) s = s.slice(0, -1);
    return s + "\u2026";
  }

  function wrap(ctx, text, width) {
    const lines = [];
    let line = "";
    for (const word of text.split(/\s+/)) {
      const next = line ? `${line} ${word}` : word;
      if (line && ctx.measureText(next).width > width) {
        lines.push(line);
        line = word;
      } else line = next;
    }
    if (line) lines.push(line);
    return lines;
  }

  // Draws the result top-down and returns the height used; run once to measure, once to draw.
  function drawResult(ctx, example, result, column, name) {
    const W = ctx.canvas.width;
    const pad = 16;
    const inner = W - 2 * pad;
    let y = pad;
    const font = (size, bold) => { ctx.font = `${bold ? "600 " : ""}${size}px system-ui, sans-serif`; };
    const line = (text, size, colour, bold) => {
      font(size, bold);
      ctx.fillStyle = colour || "#1f2430";
      for (const part of wrap(ctx, text, inner)) {
        ctx.fillText(part, pad, y + size);
        y += Math.round(size * 1.4);
      }
    };
    // one label column for every group of bars, as wide as the longest label (within limits)
    font(13);
    const labels = [...result.predicted.map((p) => p.label), ...result.features.map((f) => f.name),
      ...result.features.filter((f) => f.type === "general").flatMap((f) => f.base)];
    const labelWidth = Math.min(240, Math.max(60, Math.ceil(Math.max(...labels.map((l) => ctx.measureText(l).width)))));
    const rows = (items) => { // items: [label, share (0..1 or -1..1), text, diverging, colour]
      font(13);
      for (const [label, share, text, diverging, colour] of items) {
        const barX = pad + labelWidth + 8;
        const barW = inner - labelWidth - 8 - 64;
        ctx.fillStyle = "#1f2430";
        ctx.fillText(fit(ctx, label, labelWidth), pad, y + 13);
        ctx.fillStyle = "#e5e7eb";
        ctx.fillRect(barX, y + 4, barW, 10);
        const v = Math.max(diverging ? -1 : 0, Math.min(1, share));
        ctx.fillStyle = colour || (v >= 0 ? POSITIVE : NEGATIVE);
        if (diverging) ctx.fillRect(barX + barW / 2 + Math.min(0, v) * barW / 2, y + 4, Math.abs(v) * barW / 2, 10);
        else ctx.fillRect(barX, y + 4, v * barW, 10);
        ctx.fillStyle = "#1f2430";
        ctx.textAlign = "right";
        ctx.fillText(text, W - pad, y + 13);
        ctx.textAlign = "left";
        y += 20;
      }
    };

    line(`Example ${example.id} \u00b7 ${name}`, 17, null, true);
    line(describe(result), 13, "#6b7280");
    line(`True label: ${example.actual ? example.actual.label : "none"} \u00b7 target: ${targetText(result)}`, 13);
    y += 6;
    line("Predicted", 13, null, true);
    rows(result.predicted.map((p) => {
      const colour = example.actual && p.index === example.actual.index ? "#16a34a" : "#64748b";
      return [p.label, p.score, `${(p.score * 100).toFixed(1)}%`, false, colour];
    }));
    y += 6;
    line("Contribution per feature", 13, null, true);
    rows(result.features.map((f) => [f.name, f.contribution || 0, `${((f.contribution || 0) * 100).toFixed(0)}%`, true]));
    result.features.forEach((f, i) => {
      y += 6;
      line(f.name, 13, null, true);
      if (f.type === "image") {
        const canvases = column.querySelectorAll(`.feature[data-index="${i}"] canvas`);
        const side = Math.min(220, (inner - 12) / 2);
        let tallest = 0;
        canvases.forEach((c, k) => {
          const scale = side / Math.max(c.width, c.height);
          const w = c.width * scale;
          const h = c.height * scale;
          ctx.imageSmoothingEnabled = false;
          ctx.drawImage(c, pad + k * (side + 12), y, w, h);
          font(12);
          ctx.fillStyle = "#6b7280";
          ctx.fillText(k === 0 ? "input" : "attribution", pad + k * (side + 12), y + h + 14);
          tallest = Math.max(tallest, h + 20);
        });
        y += tallest;
        line(legendText(f), 12, "#6b7280");
      } else if (f.type === "text") {
        font(13);
        let x = pad;
        f.base.forEach((token, k) => {
          const w = ctx.measureText(token).width + 6;
          if (x + w > W - pad && x > pad) { x = pad; y += 20; }
          ctx.fillStyle = tokenColour((f.modified[k] || 0) / 100);
          ctx.fillRect(x, y, w, 18);
          ctx.fillStyle = "#1f2430";
          ctx.fillText(token, x + 3, y + 13);
          x += w + 3;
        });
        y += 24;
      } else if (f.type === "general") {
        rows(f.base.map((label, k) => {
          const v = Math.max(-100, Math.min(100, f.modified[k] || 0));
          return [label, v / 100, v.toFixed(1), true];
        }));
      }
    });
    line("attribuo Insights", 11, "#9ca3af");
    return y + pad;
  }

  function exportPng(example, result, column, name) {
    const width = 560;
    const probe = element("canvas", { width: String(width), height: "1" });
    const height = Math.ceil(drawResult(probe.getContext("2d"), example, result, column, name));
    const canvas = element("canvas", { width: String(width), height: String(height) });
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, width, height);
    drawResult(ctx, example, result, column, name);
    canvas.toBlob((blob) => {
      if (!blob) return;
      const url = URL.createObjectURL(blob);
      const link = element("a", { href: url, download: `example-${example.id}-${safeName(name)}.png`, className: "offscreen" });
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 30_000);
    }, "image/png");
  }

  return { element, card, describe, modelName, formatValue };
})();
