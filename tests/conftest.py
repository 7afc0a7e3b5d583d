"""Test-suite settings: one intra-op thread per pytest worker.

The suite runs as ``pytest -n 2`` on 2 cores. Two PyTorch threads per worker on top of that make the
workers stall each other (tiny tensors, shared cores), so each worker, and every subprocess it starts,
uses one thread.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)
