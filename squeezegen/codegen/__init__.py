"""Code generation: planned IR -> kernels -> CUDA C, C header, manifest, weights blob."""
