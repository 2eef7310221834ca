"""squeezegen on Ray Data (`pip install 'squeezegen[ray]'`): `Segmenter`, a callable class for
`Dataset.map_batches`, and the stages `squeezegen segment --ray` chains around it. See
`squeezegen.segmentation.ray_data` for the details.

    import ray, squeezegen.ray
    ds = ray.data.read_images("photos/", include_paths=True, mode="RGB")
    ds = ds.map_batches(squeezegen.ray.Segmenter, batch_size=32, num_gpus=1,
                        compute=ray.data.ActorPoolStrategy(size=2),
                        fn_constructor_kwargs={"model": "squeezeseg.yaml", "weights": "w.npz"})

This module is `squeezegen.ray`; inside squeezegen, Ray itself is always imported absolutely
(`import ray`), so the two never shadow each other.
"""
from squeezegen.segmentation.ray_data import Segmenter, connect, decode_batch, run_ray, write_batch

__all__ = ["Segmenter", "decode_batch", "write_batch", "connect", "run_ray"]
