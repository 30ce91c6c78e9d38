#!/usr/bin/env bash
# The PROTOCOL.md §1 request with curl: values of loss and a, gradients of loss by w and b.
#
#   bash examples/curl.sh                        # GRADSERVE_URL defaults to http://127.0.0.1:8000
#   GRADSERVE_URL=http://host:8000 GRADSERVE_API_KEY=... bash examples/curl.sh
#   bash examples/curl.sh BODY.json              # another request body, from a file
#
# Prints the JSON response as the server wrote it (no jq needed); on an error, prints the
# application/problem+json body and exits non-zero.
set -euo pipefail
url="${GRADSERVE_URL:-http://127.0.0.1:8000}"
auth=()
if [[ -n "${GRADSERVE_API_KEY:-}" ]]; then
  auth=(-H "Authorization: Bearer ${GRADSERVE_API_KEY}")
fi

curl --silent --show-error --fail-with-body "${auth[@]}" \
  -H 'Content-Type: application/json' \
  --data-binary "@${1:--}" "${url}/v1/evaluate" <<'JSON'
{
  "inputs": {
    "x": {"data": [[1, 2], [3, 4]]},
    "w": {"data": [[0.5], [-0.25]], "requires_grad": true},
    "b": {"shape": [1], "dtype": "float32", "b64": "AACAPw=="}
  },
  "nodes": [
    {"id": "h",    "op": "matmul",  "args": ["x", "w"]},
    {"id": "z",    "op": "add",     "args": ["h", "b"]},
    {"id": "a",    "op": "sigmoid", "args": ["z"]},
    {"id": "loss", "op": "mean",    "args": ["a"]}
  ],
  "outputs": ["loss", "a"],
  "grad": {"of": "loss", "wrt": ["w", "b"]},
  "dtype": "float32",
  "encoding": "nested"
}
JSON
echo
