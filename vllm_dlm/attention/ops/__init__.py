"""Attention kernels on vLLM's paged KV layout ([num_pages, page_size, num_kv_heads, head_dim]),
each with a plain-torch twin in `reference.py`."""
