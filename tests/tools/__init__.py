"""Tests of the tools (demo, benchmark, distributed training)."""
