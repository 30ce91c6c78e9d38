// Logistic regression trained by gradient descent through gradserve, from Node.js (18 or later)
// with its built-in fetch: the loss is binary_cross_entropy_with_logits, stable for any logit.
//
//   node examples/node/logistic_regression.mjs    # GRADSERVE_URL defaults to http://127.0.0.1:8000
//
// Prints `loss_start = ...`, `loss_end = ...`, `accuracy = ...` and the trained `w` and `b`.

const url = process.env.GRADSERVE_URL ?? "http://127.0.0.1:8000";
const headers = { "Content-Type": "application/json" };
if (process.env.GRADSERVE_API_KEY) {
  headers.Authorization = `Bearer ${process.env.GRADSERVE_API_KEY}`;
}

// The data: label 1 when x0 + 2 x1 > 1, on a grid of 7 x 7 points in [-3, 3]².
const x = [];
const t = [];
for (let i = -3; i <= 3; i++) {
  for (let j = -3; j <= 3; j++) {
    x.push([i, j]);
    t.push([i + 2 * j > 1 ? 1 : 0]);
  }
}

async function step(w, b) {
  const response = await fetch(`${url}/v1/evaluate`, {
    method: "POST",
    headers,
    body: JSON.stringify({
      inputs: {
        x: { data: x },
        t: { data: t },
        w: { data: w, requires_grad: true },
        b: { data: b, requires_grad: true },
      },
      nodes: [
        { id: "h", op: "matmul", args: ["x", "w"] },
        { id: "z", op: "add", args: ["h", "b"] },
        { id: "loss", op: "binary_cross_entropy_with_logits", args: ["z", "t"] },
      ],
      outputs: ["loss", "z"],
      grad: { of: "loss", wrt: ["w", "b"] },
      dtype: "float64",
      encoding: "nested",
    }),
  });
  const answer = await response.json();
  if (!response.ok) {
    console.error(`${answer.status} ${answer.code}: ${answer.detail}`);
    process.exit(1);
  }
  return answer;
}

const steps = 60;
const rate = 1.0;
let w = [[0], [0]];
let b = [0];
let answer;
for (let i = 0; i <= steps; i++) {
  answer = await step(w, b);
  if (i === 0) console.log(`loss_start = ${answer.outputs.loss.data}`);
  if (i === steps) break;
  const dw = answer.gradients.w.data;
  w = w.map((row, k) => [row[0] - rate * dw[k][0]]);
  b = [b[0] - rate * answer.gradients.b.data[0]];
}
const z = answer.outputs.z.data;
const right = z.filter((row, k) => (row[0] > 0 ? 1 : 0) === t[k][0]).length;
console.log(`loss_end = ${answer.outputs.loss.data}`);
console.log(`accuracy = ${right / z.length}`);
console.log(`w = ${JSON.stringify(w)}`);
console.log(`b = ${JSON.stringify(b)}`);
