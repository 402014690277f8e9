#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, generate a tiny LLaDA checkpoint in the official
# layout, `vllm serve` it (plugin + CPU mode switch on by themselves), send one OpenAI request with
# diffusion knobs in extra_body, print the answer, stop the server.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
PY="$ROOT/.venv/bin/python"
CKPT="$ROOT/.demo/tiny-llada"
PORT=${PORT:-8765}
[ -f "$CKPT/config.json" ] || "$PY" -m vllm_dlm.tools.tiny_checkpoint --family llada --out "$CKPT"
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
"$ROOT/.venv/bin/vllm" serve "$CKPT" --served-model-name tiny-llada --host 127.0.0.1 --port "$PORT" \
  --dtype float32 --max-model-len 512 --enforce-eager > "$ROOT/.demo/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  kill -0 $SERVER 2>/dev/null || { tail -50 "$ROOT/.demo/server.log"; exit 1; }
  sleep 2
done
"$PY" - "$PORT" <<'PY'
import sys, openai
client = openai.OpenAI(base_url=f"http://127.0.0.1:{sys.argv[1]}/v1", api_key="none")
resp = client.chat.completions.create(
    model="tiny-llada",
    messages=[{"role": "user", "content": "Tell me a short story."}],
    max_tokens=32, temperature=0.0,
    extra_body={"steps": 32, "block_length": 16, "remasking": "low_confidence"},
)
print("request : steps=32 block_length=16 remasking=low_confidence max_tokens=32")
print("answer  :", repr(resp.choices[0].message.content))
print("usage   :", resp.usage)
PY
