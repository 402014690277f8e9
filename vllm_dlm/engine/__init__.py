"""Engine-side pieces: the engine settings a dLLM needs and the denoising scheduler."""
