"""Quality: the verifiable task suite and its golden sets, tokenizer and training of zoo models,
evaluation with confidence intervals, and gates that optimizations must pass."""
