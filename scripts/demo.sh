#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, `vllm serve` the bundled trained LLaDA
# (models/llada-ruler-tiny, official checkpoint layout) with `--attention-backend sparsed`, and ask
# it a held-out retrieval question from a long context (a 2048-token haystack hiding one "special
# magic number") with SparseD's sparse masks on (dense for the first 4 of 16 steps, then 30% of
# the key blocks per head), over the OpenAI API (streamed). Prints the answer and the expected
# number (exit 1 if they differ), then stops the server.
# On CPU the sparsed kernels run as their torch twins (VLLM_DLM_KERNELS=torch: the Triton
# interpreter would take minutes per request); on a GPU unset it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
PY="$ROOT/.venv/bin/python"
MODEL="$ROOT/models/llada-ruler-tiny"
PORT=${PORT:-8765}
LENGTH=${LENGTH:-2048}
mkdir -p "$ROOT/.demo"
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2} VLLM_DLM_KERNELS=${VLLM_DLM_KERNELS:-torch}
"$ROOT/.venv/bin/vllm" serve "$MODEL" --served-model-name llada-ruler-tiny --host 127.0.0.1 \
  --port "$PORT" --attention-backend sparsed --dtype float32 --max-model-len 4096 --enforce-eager \
  > "$ROOT/.demo/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  kill -0 $SERVER 2>/dev/null || { tail -50 "$ROOT/.demo/server.log"; exit 1; }
  sleep 2
done
cd "$ROOT" && "$PY" - "$PORT" "$LENGTH" <<'PY'
import sys, openai
from training.tasks import TaskGenerator

port, length = int(sys.argv[1]), int(sys.argv[2])
gen = TaskGenerator()
item = gen.test_items("niah_single", length, 1)[0]        # held out: never seen in training
prompt = gen.tok.decode(item.prompt)                      # the server's tokenizer adds <|startoftext|>
client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
knobs = {"steps": 16, "block_length": 16, "skip": 0.2, "select": 0.3}   # SparseD's defaults
stream = client.completions.create(model="llada-ruler-tiny", prompt=prompt, max_tokens=16,
                                   temperature=0.0, stream=True, extra_body=knobs)
answer = "".join(chunk.choices[0].text for chunk in stream if chunk.choices).strip()
print(f"context : {length} tokens, ... {prompt[-160:]}")
print(f"knobs   : {knobs}")
print(f"answer  : {answer!r}")
print(f"expected: {gen.tok.decode(item.answer)!r}")
sys.exit(0 if answer == gen.tok.decode(item.answer).strip() else 1)
PY
