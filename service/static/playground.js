// The playground (PROTOCOL.md §13): read the form, POST /v1/evaluate, show the answer, then
// draw the graph. The picture comes from a second request over the same nodes (the expr's
// expansion included) asking for every value and gradient, so each box can show its own.
"use strict";

const $ = (id) => document.getElementById(id);

// A mistake found before anything is sent: which field, and where in it.
class InputError extends Error {
  constructor(field, message, start = null, end = null) {
    super(message);
    Object.assign(this, {field, start, end});
  }
}

// ---- the form -----------------------------------------------------------------------------

function graphForm() {
  return document.querySelector('input[name="form"]:checked').value;
}

function parseJSON(field, what) {
  const text = $(field).value;
  try {
    return JSON.parse(text);
  } catch (e) {
    const at = /position (\d+)/.exec(e.message);
    const start = at ? Number(at[1]) : 0;
    throw new InputError(field, `${what}: not valid JSON (${e.message})`, start, start + 1);
  }
}

// "id = expression" lines to {id: expression}, remembering where each expression starts.
function parseExpr() {
  const expr = {}, where = {};
  let offset = 0;
  for (const line of $("expr").value.split("\n")) {
    const start = offset;
    offset += line.length + 1;
    if (!line.trim() || line.trim().startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq < 0) {
      throw new InputError("expr", "write each line as: id = expression", start,
                           start + line.length);
    }
    const rest = line.slice(eq + 1);
    const key = line.slice(0, eq).trim();
    expr[key] = rest.trim();
    where[key] = start + eq + 1 + (rest.length - rest.trimStart().length);
  }
  return {expr, where};
}

function idList(field) {
  const text = $(field).value.trim();
  return text ? text.split(/[\s,]+/).filter(Boolean) : null;
}

function buildRequest() {
  const body = {inputs: parseJSON("inputs", "Inputs")};
  let where = {};
  if (graphForm() === "expr") {
    ({expr: body.expr, where} = parseExpr());
  } else {
    body.nodes = parseJSON("nodes", "Nodes");
  }
  const outputs = idList("outputs");
  if (outputs) body.outputs = outputs;
  const of = $("grad-of").value.trim();
  if (of) {
    body.grad = {of};
    const wrt = idList("wrt");
    if (wrt) body.grad.wrt = wrt;
  }
  body.dtype = $("dtype").value;
  return {body, where};
}

// ---- the server ---------------------------------------------------------------------------

async function post(body) {
  const headers = {"Content-Type": "application/json"};
  const key = $("key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch("/v1/evaluate", {method: "POST", headers,
                                                body: JSON.stringify(body)});
  return {status: response.status, ok: response.ok, answer: await response.json()};
}

function curl(body) {
  const auth = $("key").value.trim()
    ? " -H \"Authorization: Bearer $GRADSERVE_API_KEY\"" : "";
  const json = JSON.stringify(body).replace(/'/g, "'\\''");
  return `curl -s ${location.origin}/v1/evaluate -H 'Content-Type: application/json'${auth}` +
         ` -d '${json}'`;
}

// ---- showing the answer -------------------------------------------------------------------

function setStatus(text, kind = "") {
  $("status").textContent = text;
  $("status").className = kind;
}

function flat(data) {
  return Array.isArray(data) ? data.flat(Infinity) : [data];
}

function number(v) {
  return typeof v === "number" ? String(Number(v.toPrecision(4))) : String(v);
}

// A tensor in a few characters: its values when there are at most 4, else mean, min, max.
function summary(t) {
  if (!t) return "";
  const values = flat(t.data);
  if (values.length <= 4) {
    return t.shape.length ? `[${values.map(number).join(", ")}]` : number(values[0]);
  }
  const finite = values.filter((v) => typeof v === "number");
  if (!finite.length) return `${values.length} non-finite`;
  const mean = finite.reduce((a, b) => a + b, 0) / finite.length;
  const bad = values.length - finite.length;
  return `mean ${number(mean)} min ${number(Math.min(...finite))} ` +
         `max ${number(Math.max(...finite))}${bad ? ` (${bad} non-finite)` : ""}`;
}

function fillTable(table, tensors) {
  table.replaceChildren();
  const head = table.insertRow();
  for (const name of ["id", "shape", "data"]) {
    head.appendChild(document.createElement("th")).textContent = name;
  }
  for (const [id, t] of Object.entries(tensors)) {
    const row = table.insertRow();
    row.dataset.id = id;
    row.insertCell().textContent = id;
    row.insertCell().textContent = JSON.stringify(t.shape);
    const cell = row.insertCell();
    cell.className = "value";
    const text = JSON.stringify(t.data !== undefined ? t.data : t.b64);
    cell.textContent = text.length > 2000 ? text.slice(0, 2000) + " …" : text;
  }
}

function showProblem(status, problem, where) {
  setStatus(`${status} ${problem.title || ""}: ${problem.code || "error"}`, "error");
  const box = $("problem");
  box.hidden = false;
  box.replaceChildren();
  box.appendChild(document.createElement("p")).textContent = problem.detail || "";
  const list = box.appendChild(document.createElement("ul"));
  for (const e of problem.errors || []) {
    const item = list.appendChild(document.createElement("li"));
    item.appendChild(document.createElement("code")).textContent = e.pointer || "(the body)";
    item.appendChild(document.createTextNode(
      ` ${e.detail}${e.column ? ` (column ${e.column})` : ""}`));
    mark(e, where);
  }
  if (status === 401) {
    box.appendChild(document.createElement("p")).textContent =
      "This server has API keys: enter one above.";
    flag("key");
  }
}

function flag(field) {
  $(field).classList.add("bad");
}

function select(field, start, end) {
  const el = $(field);
  el.classList.add("bad");
  el.focus();
  el.setSelectionRange(start, Math.max(end, start + 1));
}

// Highlight where a problem's pointer leads: a character of an expression, a span of JSON.
function mark(error, where) {
  const parts = (error.pointer || "").split("/").slice(1)
    .map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
  const [top, second] = parts;
  if (top === "expr" && second in where) {
    const text = $("expr").value;
    const start = where[second] + (error.column || 1) - 1;
    let end = start + 1;
    while (/[\w.]/.test(text[start]) && /[\w.]/.test(text[end] || "")) end++;
    select("expr", start, end);
  } else if (top === "inputs" || top === "nodes" || top === "expr") {
    const field = top;
    const span = top === "expr" ? null : locate($(field).value, parts.slice(1));
    if (span) select(field, span[0], span[1]); else flag(field);
  } else if (top === "outputs") {
    flag("outputs");
  } else if (top === "grad") {
    flag(second === "wrt" ? "wrt" : "grad-of");
  }
}

// The [start, end) of the value at `path` (keys and indexes as strings) in JSON `text`.
function locate(text, path) {
  let i = 0;
  const space = () => { while (/\s/.test(text[i] || "")) i++; };
  const string = () => {
    const start = i++;
    while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i));
  };
  const skip = () => {
    space();
    const start = i, open = text[i];
    if (open === '"') {
      string();
    } else if (open === "{" || open === "[") {
      const close = open === "{" ? "}" : "]";
      i++;
      space();
      while (i < text.length && text[i] !== close) {
        if (open === "{") { space(); string(); space(); i++; }
        skip();
        space();
        if (text[i] === ",") i++;
        space();
      }
      i++;
    } else {
      while (i < text.length && !/[\s,\]}]/.test(text[i])) i++;
    }
    return [start, i];
  };
  const find = (depth) => {
    space();
    if (depth === path.length) return skip();
    const open = text[i];
    if (open !== "{" && open !== "[") return null;
    i++;
    for (let index = 0; ; index++) {
      space();
      if (i >= text.length || text[i] === "}" || text[i] === "]") return null;
      let name = String(index);
      if (open === "{") { name = string(); space(); i++; }
      if (name === path[depth]) return find(depth + 1);
      skip();
      space();
      if (text[i] === ",") i++;
    }
  };
  try { return find(0); } catch { return null; }
}

// ---- the picture --------------------------------------------------------------------------

function graphOf(body, answer) {
  const expanded = answer.expanded || [];
  const keys = new Set(Object.keys(body.expr || {}));
  return {
    inputs: Object.keys(body.inputs),
    nodes: [...(body.nodes || []), ...expanded],
    generated: new Set(expanded.map((n) => n.id).filter((id) => !keys.has(id))),
  };
}

// The same graph, asking for every value and every gradient.
function inspection(body, graph) {
  const ids = [...graph.inputs, ...graph.nodes.map((n) => n.id)];
  const request = {inputs: body.inputs, nodes: graph.nodes, outputs: ids, dtype: body.dtype,
                   encoding: "flat"};
  if (body.grad) request.grad = {...body.grad, wrt: ids};
  return request;
}

function call(node) {
  const attrs = Object.entries(node.attrs || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  return `${node.op}(${[...node.args.map(String), ...attrs].join(", ")})`;
}

function boxLines(id, what, detail) {
  const value = detail && detail.outputs[id];
  const grad = detail && detail.gradients[id];
  const lines = [`${id} = ${what}`];
  if (value) lines.push(`shape ${JSON.stringify(value.shape)}`, `value ${summary(value)}`);
  if (grad) lines.push(`grad ${summary(grad)}`);
  return lines;
}

const SVG = "http://www.w3.org/2000/svg";

function svg(name, attrs, parent) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function draw(graph, detail, body) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({rankdir: "TB", nodesep: 20, ranksep: 34, marginx: 10, marginy: 10});
  g.setDefaultEdgeLabel(() => ({}));
  const add = (id, lines, kind) => {
    const width = 16 + 6.7 * Math.max(...lines.map((l) => l.length));
    g.setNode(id, {lines, kind, width, height: 10 + 14 * lines.length});
  };
  for (const id of graph.inputs) {
    const role = body.inputs[id] && body.inputs[id].requires_grad ? "parameter" : "input";
    add(id, boxLines(id, role, detail), "input");
  }
  for (const node of graph.nodes) {
    add(node.id, boxLines(node.id, call(node), detail),
        graph.generated.has(node.id) ? "generated" : "node");
  }
  for (const node of graph.nodes) {
    for (const a of node.args) if (typeof a === "string" && g.hasNode(a)) g.setEdge(a, node.id);
  }
  dagre.layout(g);

  const size = g.graph();
  const root = svg("svg", {width: size.width, height: size.height,
                           viewBox: `0 0 ${size.width} ${size.height}`});
  for (const e of g.edges()) {
    const points = g.edge(e).points;
    svg("path", {d: "M" + points.map((p) => `${p.x},${p.y}`).join(" L")}, root);
    const [a, b] = points.slice(-2);
    const angle = Math.atan2(b.y - a.y, b.x - a.x);
    const tip = (da, r) => `${b.x - r * Math.cos(angle + da)},${b.y - r * Math.sin(angle + da)}`;
    svg("polygon", {points: `${b.x},${b.y} ${tip(0.4, 8)} ${tip(-0.4, 8)}`}, root);
  }
  for (const id of g.nodes()) {
    const n = g.node(id);
    const box = svg("g", {class: n.kind, "data-id": id,
                          transform: `translate(${n.x - n.width / 2},${n.y - n.height / 2})`},
                    root);
    svg("rect", {width: n.width, height: n.height, rx: 4}, box);
    n.lines.forEach((line, k) => {
      svg("text", {x: 8, y: 17 + 14 * k, class: k ? "" : "title"}, box).textContent = line;
    });
  }
  $("graph").replaceChildren(root);
}

// ---- Evaluate -----------------------------------------------------------------------------

async function evaluate(event) {
  event.preventDefault();
  for (const el of document.querySelectorAll(".bad")) el.classList.remove("bad");
  $("problem").hidden = true;
  for (const table of ["outputs-table", "gradients-table"]) $(table).replaceChildren();
  $("graph").replaceChildren();
  setStatus("Evaluating…");
  $("evaluate").disabled = true;
  try {
    let request;
    try {
      request = buildRequest();
    } catch (e) {
      if (!(e instanceof InputError)) throw e;
      setStatus(e.message, "error");
      if (e.start !== null) select(e.field, e.start, e.end); else flag(e.field);
      return;
    }
    const {body, where} = request;
    $("curl").textContent = curl(body);
    const first = await post(body);
    if (!first.ok) {
      showProblem(first.status, first.answer, where);
      return;
    }
    const {outputs, gradients, stats, warnings} = first.answer;
    fillTable($("outputs-table"), outputs);
    fillTable($("gradients-table"), gradients);
    const notes = warnings.length ? `; warnings: ${JSON.stringify(warnings)}` : "";
    setStatus(`200 OK: ${stats.nodes} nodes, forward ${stats.forward_ms} ms, backward ` +
              `${stats.backward_ms} ms${notes}`, "ok");
    const graph = graphOf(body, first.answer);
    const detail = await post(inspection(body, graph));
    draw(graph, detail.ok ? detail.answer : null, body);
  } catch (e) {
    setStatus(`Could not evaluate: ${e.message}`, "error");
  } finally {
    $("evaluate").disabled = false;
  }
}

function showForm() {
  const expr = graphForm() === "expr";
  $("expr-editor").hidden = !expr;
  $("nodes-editor").hidden = expr;
}

$("request").addEventListener("submit", evaluate);
for (const radio of document.querySelectorAll('input[name="form"]')) {
  radio.addEventListener("change", showForm);
}
showForm();
