# Source on the GPU machine after the vLLM bundle is installed (../shared/device/README.md):
#   bash .device/vllm/install.sh .device/vllm && source scripts/device_env.sh && python3 -m benchmarks...
# `pip install -e .` fails there (no network for the build backend), so the plugin's entry point is
# registered with a metadata-only dist-info on PYTHONPATH, next to the checkout itself.
META=/tmp/vllm_dlm_meta
mkdir -p "$META/vllm_dlm-0.1.0.dist-info"
printf 'Metadata-Version: 2.1\nName: vllm-dlm\nVersion: 0.1.0\n' > "$META/vllm_dlm-0.1.0.dist-info/METADATA"
printf '[vllm.general_plugins]\nvllm_dlm = vllm_dlm:register\n' > "$META/vllm_dlm-0.1.0.dist-info/entry_points.txt"
export PYTHONPATH="/opt/vllm-site:$(pwd):$META" VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1
