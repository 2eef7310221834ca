"""`squeezegen segment` when things go wrong: worker processes that die or hang, signals, folders
that cannot be read, temp files with cut names, and two runs into one OUT_DIR. On the NumPy
backend, with the small model and images of test_segment.py.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from squeezegen import segment
from squeezegen.segmentation import worker_pool
from test_segment import DEATH, _pictures, _tmp_files, data  # noqa: F401  (data: the fixture)


def _names(n):
    return [f"{i:03d}.png" for i in range(n)]


def test_many_dying_decoders_cost_only_their_images_and_retry_in_parallel(data, tmp_path,
                                                                          monkeypatch):
    """12 images among 120 kill the worker decoding them (a codec's segfault). Each death
    breaks the pool; what the workers were on at that moment is retried in a process of its
    own (at most one image a worker), the other images of the failed tasks go back to the
    restarted pool all at once. So only the killers fail, and the processes started alone are
    at most the workers times the killers (before: every image of every task pending at a
    death, here about all 120, one chunk at a time)."""
    names = _names(120)
    killers = names[5::10]
    _pictures(tmp_path / "in", names, size=(20, 24))
    monkeypatch.setenv(worker_pool.DIES, ",".join(f"decode:{k}" for k in killers))
    alone, calls = worker_pool.WorkerPool.alone, []

    def counted(self, *args, **kw):
        calls.append(args[1:])
        return alone(self, *args, **kw)

    monkeypatch.setattr(worker_pool.WorkerPool, "alone", counted)
    start = time.monotonic()
    s = segment(data["model"], data["weights"], [tmp_path / "in"], tmp_path / "out", batch=8,
                backend="numpy", workers=2, decoders="processes", progress=False,
                log=lambda m: None)
    took = time.monotonic() - start
    assert (s.written, s.failed) == (len(names) - len(killers), len(killers)), s.failures
    assert sorted((Path(p).name, DEATH.sub("(how)", why)) for p, why in s.failures) == \
        [(k, "the decoder process died (how) on this image") for k in killers]
    listed = (tmp_path / "out" / "failed.txt").read_text().splitlines()
    assert sorted(Path(line.split("\t")[0]).name for line in listed) == killers
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == \
        [f"{n}.png" for n in names if n not in killers]
    assert not _tmp_files(tmp_path / "out")
    assert len(killers) <= len(calls) <= 2 * len(killers), len(calls)
    assert took < 60, took


def _pool(workers=2):
    """A WorkerPool for (3, 8, 8) inputs: one batch of 4, no mask slots."""
    mean, std = np.zeros((3, 1, 1), np.float32), np.ones((3, 1, 1), np.float32)
    return worker_pool.WorkerPool(1, 4, (3, 8, 8), "stretch", mean, std, workers, images=64)


def test_many_dying_png_writers_cost_only_their_images(tmp_path, monkeypatch):
    """The same for the PNG writers (worker processes on a GPU): 40 masks in tasks of 4, all
    submitted at once, 6 of them kill the worker writing them. Each task's future gives one
    result an image; only the killers' are errors; the processes started alone are at most
    the workers times the killers."""
    names = [f"m{i:02d}.png" for i in range(40)]
    killers = names[3::7]
    monkeypatch.setenv(worker_pool.DIES, ",".join(f"encode:{k}" for k in killers))
    alone, calls = worker_pool.WorkerPool.alone, []
    monkeypatch.setattr(worker_pool.WorkerPool, "alone",
                        lambda self, *a, **kw: calls.append(a) or alone(self, *a, **kw))
    pool, deaths = _pool(), []
    pool.on_restart = lambda: deaths.append(1)
    try:
        masks = [(n, np.full((5, 6), i % 4, np.uint8)) for i, n in enumerate(names)]
        futures = [pool.encode(str(tmp_path), masks[i:i + 4], 1) for i in range(0, 40, 4)]
        results = [r for f in futures for r in f.result(timeout=60)]
    finally:
        pool.close(5.0)
    assert len(results) == len(names)
    for name, result in zip(names, results):
        if name in killers:
            assert result[0] == "error" and DEATH.sub("(how)", result[1]) == \
                "the PNG writer process died (how) on this image", result
        else:
            assert result[0] == "ok", (name, result)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == \
        sorted(f"{n}.png" for n in names if n not in killers)
    assert 1 <= len(deaths) <= len(killers)
    assert len(killers) <= len(calls) <= 2 * len(killers), len(calls)


def test_sigterm_while_a_worker_hangs_exits_130_after_a_short_grace(data, tmp_path):
    """A worker hung on an image (here deaf to SIGTERM too) must not keep a stopped run from
    ending: after SIGTERM (twice, as a scheduler may send it), the workers get
    pipeline.WORKERS_GRACE_S (5 s) to finish their task, then are terminated and killed; the
    run exits with status 130, the summary and no traceback, and leaves no process behind."""
    names = _names(30)
    _pictures(tmp_path / "in", names, size=(20, 24))
    out = tmp_path / "out"
    env = dict(os.environ, **{worker_pool.HANGS: "decode:010.png"})
    proc = subprocess.Popen([sys.executable, "-m", "squeezegen", "segment", str(data["model"]),
                             "--weights", str(data["weights"]), str(tmp_path / "in"), "-o",
                             str(out), "--batch", "2", "--workers", "1", "--backend", "numpy",
                             "--decoders", "processes"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(out.glob("*.png"))) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)                  # the images before the hung one are written
        time.sleep(0.3)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    took = time.monotonic() - start
    assert proc.returncode == 130, stderr
    assert "Interrupted: 10 of 30 images" in stderr and "squeezegen: interrupted" in stderr
    assert "Traceback" not in stderr, stderr
    assert took < 20, took
    assert len(list(out.glob("*.png"))) == 10 and not _tmp_files(out)
    for _ in range(50):                       # the group is empty once every worker is reaped
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("a worker process outlived the run")


def test_the_summary_counts_images_and_unreadable_folders_apart(data, tmp_path, monkeypatch):
    """A folder that cannot be listed is not an image: the summary counts it apart
    (`unreadable`), so written + failed + skipped is the number of images found, and says so
    in its text; failed.txt lists it with the images that failed. (chmod 000 is no obstacle to
    root: os.scandir refuses the folder here.)"""
    _pictures(tmp_path / "in", ["a.png", "b.png", "done.png", "locked/c.png"])
    (tmp_path / "in" / "bad.png").write_bytes(b"not a PNG")
    out = tmp_path / "out"
    segment(data["model"], data["weights"], [tmp_path / "in" / "done.png"], out,
            backend="numpy", progress=False)
    locked = str(tmp_path / "in" / "locked")
    scandir = os.scandir

    def refusing(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    s = segment(data["model"], data["weights"], [tmp_path / "in"], out, backend="numpy",
                progress=False, log=lambda m: None)
    assert (s.images, s.written, s.failed, s.skipped) == (4, 2, 1, 1)
    assert s.written + s.failed + s.skipped == s.images
    assert [p for p, _ in s.failures] == [str(tmp_path / "in" / "bad.png")]
    assert s.unreadable == [(locked, "cannot read the folder: Permission denied")]
    assert s.as_dict()["unreadable"] == [[locked, "cannot read the folder: Permission denied"]]
    text = s.text()
    assert text.startswith(f"2 of 4 images segmented into {out}") and "1 failed" in text
    assert ("1 folder could not be read, its images not counted (listed in failed.txt)"
            in text), text
    assert sorted(line.split("\t")[0] for line in (out / "failed.txt").read_text().splitlines()) \
        == sorted([locked, str(tmp_path / "in" / "bad.png")])


def test_temp_files_with_cut_names_are_swept_and_only_ours(data, tmp_path):
    """An output name of 242 bytes or more does not fit in its temp file's name, which
    fsutil.temp_prefix cuts to its first bytes: the next run still recognises such a temp file
    of one of its outputs (a .png or .npy), and keeps one of the same form that no output of
    its own begins with, and the full-length forms stay as before."""
    import tempfile
    from squeezegen.fsutil import MAX_NAME_BYTES, temp_prefix
    long = "é" * 60 + "l" * 120 + ".png"                  # 244 bytes; the PNG's name: 248
    short = "a.png"
    _pictures(tmp_path / "in", [long, f"sub/{long}", short])
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    stale = []
    for folder, suffix in ((out, ".png"), (out / "sub", ".png"), (out, ".npy")):
        fd, path = tempfile.mkstemp(prefix=temp_prefix(long + suffix), suffix=".tmp", dir=folder)
        os.close(fd)                                       # as atomic_write names them
        stale.append(Path(path))
    assert all(len(p.name.encode()) <= MAX_NAME_BYTES for p in stale)
    assert not stale[0].name.startswith(f".{long}.png")   # cut: the name is not in it whole
    other = "m" * 244 + ".png"                             # not an output of this run
    kept = [out / f"{temp_prefix(other + '.png')}abcdefgh.tmp",
            out / f"{temp_prefix(long + '.png')}abcdefg.tmp",          # 7 random characters
            out / f".{long[:150]}.abcdefgh.tmp"]                       # cut elsewhere
    for p in kept:
        p.write_bytes(b"not ours")
    lines = []
    s = segment(data["model"], data["weights"], [tmp_path / "in"], out, backend="numpy",
                progress=False, log=lines.append)
    assert s.written == 3
    assert not any(p.exists() for p in stale), [p.name for p in stale if p.exists()]
    assert all(p.exists() for p in kept)
    assert [l for l in lines if "temporary" in l] == [
        f"squeezegen: removed 3 temporary files that an interrupted run left in {out}"]
    assert (out / f"{long}.png").is_file() and (out / "sub" / f"{long}.png").is_file()


def test_cut_prefixes_are_exactly_the_names_temp_prefix_cuts():
    from squeezegen.fsutil import temp_prefix
    from squeezegen.segmentation.outputs import cut_prefixes, left_by_a_run
    whole, cut = "a" * 237 + ".png", "a" * 238 + ".png"     # 241 bytes fit, 242 do not
    assert temp_prefix(whole) == f".{whole}." and cut_prefixes({whole}) == frozenset()
    assert cut_prefixes({whole, cut}) == {f".{cut[:-1]}."}
    stale = f".{cut[:-1]}.k3x_9q0z.tmp"
    assert left_by_a_run(stale, cut_prefixes({cut})) and not left_by_a_run(stale)
    assert not left_by_a_run(f".{cut[:-2]}.k3x_9q0z.tmp", cut_prefixes({cut}))


def test_a_second_run_into_the_same_out_dir_stops_at_once(data, tmp_path):
    """Two runs into one OUT_DIR: the second would sweep the first's temp files in progress
    (for a killed run's). A run holds OUT_DIR/.squeezegen-segment.lock (flock) for its whole
    length; while another holds it (here the test), a run stops at once with a one-line error
    naming OUT_DIR, before sweeping or writing anything, also with --ray (before it joins a
    cluster). The lock file stays, and is neither an input nor an output: the next run writes
    every image, and a rerun resumes."""
    import fcntl
    import squeezegen
    _pictures(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".a.png.png.abcdefgh.tmp"             # as if the other run were writing it
    stale.write_bytes(b"half")
    lock = out / ".squeezegen-segment.lock"
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "squeezegen", "segment",
                               str(data["model"]), "--weights", str(data["weights"]),
                               str(tmp_path / "in"), "-o", str(out), "--backend", "numpy"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and proc.stderr.splitlines() == [
            f"squeezegen: error: {out}: another segment run is writing into this output "
            f"folder (it holds .squeezegen-segment.lock): wait for it to end, or give "
            f"another -o"], proc.stderr
        assert time.monotonic() - start < 30
        for ray in (None, "auto"):
            with pytest.raises(squeezegen.SqueezegenError, match="another segment run"):
                segment(data["model"], data["weights"], [tmp_path / "in"], out,
                        backend="numpy", progress=False, ray=ray)
        assert stale.exists() and not list(out.glob("*.png"))
    s = segment(data["model"], data["weights"], [tmp_path / "in"], out, backend="numpy",
                progress=False, log=lambda m: None)
    assert (s.images, s.written) == (2, 2) and lock.is_file() and not stale.exists()
    again = segment(data["model"], data["weights"], [tmp_path / "in"], out, backend="numpy",
                    progress=False)
    assert (again.images, again.written, again.skipped) == (2, 0, 2)


def test_sigterm_under_ray_stops_like_ctrl_c_after_ray_init_took_the_handler(data, tmp_path,
                                                                            monkeypatch):
    """ray.init installs its own SIGTERM handler (sys.exit), over the one segment installed
    for the run. run_ray puts segment's back once connected, so SIGTERM raises
    KeyboardInterrupt (the interrupted summary, failed.txt, status 130), not SystemExit. Here,
    without starting Ray: `connect` installs a handler as ray.init does, and the first call
    into the cluster gets a SIGTERM. The handler from before the run is restored after it."""
    ray = pytest.importorskip("ray")
    from squeezegen.segmentation import ray_data

    def connect(address, log):                      # what ray.init does to SIGTERM
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        return False

    def cluster_resources():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)                               # (the handler runs before this ends)
        return {}

    monkeypatch.setattr(ray_data, "connect", connect)
    monkeypatch.setattr(ray, "cluster_resources", cluster_resources)
    _pictures(tmp_path / "in", ["a.png"])
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        segment(data["model"], data["weights"], [tmp_path / "in"], tmp_path / "out",
                backend="numpy", progress=False, ray="auto")
    assert signal.getsignal(signal.SIGTERM) is before
