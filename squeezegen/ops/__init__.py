"""The op families: one module each, every fact about its ops in one `OpInfo` entry (fields of
the model language, shape, weights, FLOPs, NumPy reference, lowering to a template, PyTorch
peer). `squeezegen.ir.ops` gathers them into the registry, `OPS`."""
