"""Benchmarks: latency and throughput per backend, FLOP counts and the machine's GEMM rate."""
