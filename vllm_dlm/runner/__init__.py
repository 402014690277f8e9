"""Glue between Model Runner V2 and `vllm_dlm.decoding`: the ModelState hooks and the sampler."""
