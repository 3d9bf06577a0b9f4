"""Benchmark data: the record types shared by every source, the synthetic world, and RWKU's loader."""
