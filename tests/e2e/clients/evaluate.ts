// Run by tests/e2e/test_generated_clients.py: each request body of bodies.ts through a client
// that openapi-typescript and openapi-fetch made from the live GET /openapi.json. Compiled
// with tsc --strict first, so a body or a response the generated types cannot express fails.
//
// Prints one JSON object: for each body, the returned tensors decoded to numbers
// ({"loss": {"shape", "values"}, "grad w": ...}), or the problem+json it was refused with.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";
import { bodies } from "./bodies.js";

type TensorOut = components["schemas"]["TensorOut"];
type Problem = components["schemas"]["Problem"];

/** A response tensor's numbers in C order: nested or flat `data`, or base64 `b64`. */
function values(t: TensorOut): number[] {
  if (t.b64 != null) {
    const bytes = Buffer.from(t.b64, "base64");
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const size = t.dtype === "float32" ? 4 : 8;
    return Array.from({ length: bytes.length / size }, (_, i) =>
      size === 4 ? view.getFloat32(i * size, true) : view.getFloat64(i * size, true));
  }
  // Number() reads the non-finite strings "NaN", "Infinity" and "-Infinity" too
  return [t.data].flat(Infinity).map(Number);
}

const client = createClient<paths>({ baseUrl: process.argv[2] });
const printed: Record<string, unknown> = {};
for (const [name, body] of Object.entries(bodies)) {
  const { data, error, response } = await client.POST("/v1/evaluate", { body });
  if (error !== undefined) {
    const problem: Problem = error;
    printed[name] = { status: response.status, problem };
    continue;
  }
  const tensors: Record<string, TensorOut> = { ...data.outputs };
  for (const [id, t] of Object.entries(data.gradients)) tensors[`grad ${id}`] = t;
  printed[name] = Object.fromEntries(Object.entries(tensors).map(
    ([id, t]) => [id, { shape: t.shape, values: values(t) }]));
}
// JSON has no NaN or Infinity: written as the same strings the server uses
console.log(JSON.stringify(printed, (_, v) =>
  typeof v === "number" && !Number.isFinite(v) ? String(v) : v));
