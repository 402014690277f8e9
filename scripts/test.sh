#!/usr/bin/env bash
# Set up .venv (first run: ~5 min of downloads) and run the test suite on CPU.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
exec "$ROOT/.venv/bin/python" -m pytest tests -v -p no:cacheprovider --timeout 1800 "$@"
