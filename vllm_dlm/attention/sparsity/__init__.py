"""Sparsity policies (pure torch): which key blocks each head's query blocks keep (SparseD), which
cached tokens a layer keeps (Sparse-dLLM, to come)."""
