"""`segment --ray` and `squeezegen.ray.Segmenter` on a local two-node Ray cluster
(`ray.cluster_utils.Cluster`, started once for the module), on the NumPy backend.

Needs the ray extra (`pip install 'squeezegen[ray]'`); skipped without it.
"""
from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'squeezegen[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'ray[data]')")

from PIL import Image  # noqa: E402

from squeezegen import segment  # noqa: E402
from test_segment import MEAN, STD, data  # noqa: E402,F401  (data: the module fixture)


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    c.add_node(num_cpus=2)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def test_ray_pipeline_matches_the_local_one_and_splits_over_two_nodes(data, cluster, tmp_path):
    local = segment(data["model"], data["weights"], [data["images"]], tmp_path / "local",
                    batch=4, backend="numpy", mean=MEAN, std=STD, progress=False)
    s = segment(data["model"], data["weights"], [data["images"]], tmp_path / "ray", batch=4,
                backend="numpy", mean=MEAN, std=STD, progress=False, ray="auto")
    assert (s.written, s.failed) == (local.written, local.failed) == (len(data["names"]) - 3, 3)
    assert sorted(p for p, _ in s.failures) == sorted(p for p, _ in local.failures)
    assert (tmp_path / "ray/failed.txt").read_text() == (tmp_path / "local/failed.txt").read_text()
    for png in (tmp_path / "local").rglob("*.png"):
        twin = tmp_path / "ray" / png.relative_to(tmp_path / "local")
        np.testing.assert_array_equal(np.asarray(Image.open(twin)), np.asarray(Image.open(png)))
    # one actor per node (numpy backend), both nodes did part of the work. Ray Data sends a
    # batch to an actor on the node that holds it where that actor has room; on a loaded
    # machine (the suite's other workers) one node's decoding can be so slow that its
    # neighbour's actor keeps up with all ten batches. Up to two more runs then show the split.
    split = s
    for _ in range(2):
        if len({w.split("/")[0] for w in split.networks}) == 2:
            break
        split = segment(data["model"], data["weights"], [data["images"]], tmp_path / "again",
                        batch=4, backend="numpy", mean=MEAN, std=STD, progress=False,
                        ray="auto", overwrite=True)
    nodes = {w.split("/")[0] for w in split.networks}
    assert len(nodes) == 2 and all(n > 0 for n in split.per_network), (split.networks,
                                                                        split.per_network)
    assert "ray/numpy" in s.text()
    again = segment(data["model"], data["weights"], [data["images"]], tmp_path / "ray",
                    backend="numpy", mean=MEAN, std=STD, progress=False, ray="auto")
    assert (again.written, again.skipped, again.failed) == (0, s.written, 3)


def test_segmenter_in_a_users_read_images_pipeline(data, cluster, tmp_path):
    import squeezegen.ray
    names = ["png/00.png", "png/deep/03.png", "grey/1.png", "rgba/2.png"]
    local = tmp_path / "local"
    segment(data["model"], data["weights"], [data["images"] / n for n in names], local,
            backend="numpy", mean=MEAN, std=STD, progress=False)
    ds = ray.data.read_images([str(data["images"] / n) for n in names], include_paths=True,
                              mode="RGB")
    ds = ds.map_batches(squeezegen.ray.Segmenter, batch_size=3,
                        compute=ray.data.ActorPoolStrategy(size=1),
                        fn_constructor_kwargs={"model": str(data["model"]),
                                               "weights": str(data["weights"]), "batch": 2,
                                               "backend": "numpy", "mean": MEAN, "std": STD})
    rows = {row["path"].split("/images/")[-1]: row for row in ds.iter_rows()}
    assert sorted(rows) == sorted(names)
    for n in names:
        assert rows[n]["error"] == ""
        want = np.asarray(Image.open(local / f"{n.split('/')[-1]}.png"))
        np.testing.assert_array_equal(rows[n]["classes"], want)
