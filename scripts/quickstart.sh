#!/usr/bin/env bash
# The quick start: set up, then segment a generated demo slide with the bundled demo model on an
# embedded local Ray, and print where the outputs are and the dice against the truth.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/wsisam-engine demo --out runs/demo "$@"
