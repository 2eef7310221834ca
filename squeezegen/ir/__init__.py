"""The IR: graphs of frozen nodes, the op registry, verification and printing."""
