"""Run generated networks on the GPU with PyCUDA (an optional dependency: squeezegen[cuda])."""
