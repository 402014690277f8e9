"""Per-request denoising: transfer schedules, remasking rules and the block state machine.

Pure torch, no vLLM imports: `runner/` feeds logits in and reads committed tokens out.
"""
