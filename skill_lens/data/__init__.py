"""Tasks and their splits, text perturbations and AdvGLUE, length-sorted batches, and shards of batches across processes."""
