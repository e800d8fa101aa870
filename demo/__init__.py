"""The small-world demo (`make demo`): DenseVLM end to end on the CPU. Not part of the library:
it uses densevlm_d2 as any user would. See docs/demo.md."""
