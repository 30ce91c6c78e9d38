// The PROTOCOL.md §1 request from Node.js (18 or later) with its built-in fetch; no npm packages.
//
//   node examples/node/evaluate.mjs             # GRADSERVE_URL defaults to http://127.0.0.1:8000
//   GRADSERVE_URL=http://host:8000 GRADSERVE_API_KEY=... node examples/node/evaluate.mjs
//
// Prints one line per value and per gradient: `loss = 0.77431655`, `grad w = [[...], [...]]`.

const url = process.env.GRADSERVE_URL ?? "http://127.0.0.1:8000";

const request = {
  inputs: {
    x: { data: [[1, 2], [3, 4]] },
    w: { data: [[0.5], [-0.25]], requires_grad: true },
    b: { shape: [1], dtype: "float32", b64: "AACAPw==" }, // float32 1.0, little-endian
  },
  nodes: [
    { id: "h", op: "matmul", args: ["x", "w"] },
    { id: "z", op: "add", args: ["h", "b"] },
    { id: "a", op: "sigmoid", args: ["z"] },
    { id: "loss", op: "mean", args: ["a"] },
  ],
  outputs: ["loss", "a"],
  grad: { of: "loss", wrt: ["w", "b"] },
  dtype: "float32",
  encoding: "nested",
};

const headers = { "Content-Type": "application/json" };
if (process.env.GRADSERVE_API_KEY) {
  headers.Authorization = `Bearer ${process.env.GRADSERVE_API_KEY}`;
}

const response = await fetch(`${url}/v1/evaluate`, {
  method: "POST",
  headers,
  body: JSON.stringify(request),
});
const answer = await response.json();
if (!response.ok) {
  // application/problem+json: switch on `code`, never on the message
  console.error(`${answer.status} ${answer.code}: ${answer.detail}`);
  process.exit(1);
}

// Non-finite values arrive as the strings "NaN", "Infinity" and "-Infinity".
for (const [id, t] of Object.entries(answer.outputs)) {
  console.log(`${id} = ${JSON.stringify(t.data)}`);
}
for (const [id, t] of Object.entries(answer.gradients)) {
  console.log(`grad ${id} = ${JSON.stringify(t.data)}`);
}
