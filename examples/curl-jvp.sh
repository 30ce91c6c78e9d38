#!/usr/bin/env bash
# Forward mode with curl (PROTOCOL.md §8): examples/jvp.json asks for the §1 graph's values
# and for how loss and a change along the tangent [[1], [2]] of w (inputs without a tangent
# stay fixed), from one forward pass. The response's "jvp" member holds the two.
#
#   bash examples/curl-jvp.sh                    # GRADSERVE_URL defaults to http://127.0.0.1:8000
#
# curl.sh posts it: the same settings, output and exit status.
set -euo pipefail
here="$(dirname "$0")"
exec bash "${here}/curl.sh" "${here}/jvp.json"
