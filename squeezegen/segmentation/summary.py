"""What a `segment` run did: counts, speed, and where the time went."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class SegmentSummary:
    out_dir: str
    backend: str                          # "numpy", "cuda", "ray"
    networks: list[str]                   # one label per network: "cuda:0", "numpy", ...
    images: int = 0                       # found in the inputs
    written: int = 0                      # segmented and written in this run
    skipped: int = 0                      # already had an output (resume), not redone
    failed: int = 0                       # unreadable, or could not be written
    failures: list[tuple[str, str]] = field(default_factory=list)     # (path, reason)
    # folders that could not be listed, (path, reason): not images, so counted apart (the
    # images in them are not among `images`); written + failed + skipped == images
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    wall_s: float = 0.0                   # from the first image to the last output
    per_network: list[int] = field(default_factory=list)   # images each network ran
    network_s: float = 0.0                # seconds the networks spent running, summed
    decode_s: float = 0.0                 # thread-seconds decoding (and resizing) images
    resized_on: str = "cpu"               # where the decoded images were resized: cpu, gpu
    jpegs_on: str = "cpu"                 # where the JPEGs were decoded: cpu, gpu (nvJPEG)
    overlapped: bool = False              # the GPU networks kept two batches in flight
    encode_s: float = 0.0                 # thread-seconds resizing scores and writing PNGs
    interrupted: bool = False

    @property
    def images_per_s(self) -> float:
        return self.written / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def network_busy(self) -> float:
        """The fraction of the wall time the networks were running, averaged over them."""
        n = max(1, len(self.networks))
        return min(1.0, self.network_s / (self.wall_s * n)) if self.wall_s > 0 else 0.0

    def as_dict(self, failures: int = 100) -> dict:
        """The fields, the derived rates, and the first `failures` failures and unreadable
        folders (for JSON)."""
        out = asdict(self)
        out["failures"] = [list(f) for f in self.failures[:failures]]
        out["unreadable"] = [list(f) for f in self.unreadable[:failures]]
        out.update(images_per_s=self.images_per_s, network_busy=self.network_busy)
        return out

    def text(self) -> str:
        """One paragraph for the end of the run."""
        head = "Interrupted: " if self.interrupted else ""
        parts = [f"{head}{self.written:,} of {self.images:,} images segmented into "
                 f"{self.out_dir} in {self.wall_s:.1f} s ({self.images_per_s:,.1f} img/s)"]
        if self.skipped:
            parts.append(f"{self.skipped:,} already done and skipped")
        parts.append(f"{self.failed:,} failed" + (" (listed in failed.txt)" if self.failed else ""))
        if self.unreadable:
            n = len(self.unreadable)
            parts.append(f"{n:,} folder{'s' if n > 1 else ''} could not be read, "
                         f"{'their' if n > 1 else 'its'} images not counted (listed in "
                         f"failed.txt)")
        split = ", ".join(f"{label} {n:,}" for label, n in zip(self.networks, self.per_network))
        parts.append(f"the {self.backend} network{'s' if len(self.networks) > 1 else ''} "
                     f"({split}) ran {self.network_busy:.0%} of the time")
        parts.append(f"decode {self.decode_s:.1f} s, network {self.network_s:.1f} s, "
                     f"encode {self.encode_s:.1f} s of thread time ("
                     f"{'JPEGs decoded on the GPU, ' if self.jpegs_on == 'gpu' else ''}"
                     f"images resized on the {self.resized_on.upper()}"
                     f"{', two batches in flight' if self.overlapped else ''})")
        text = "; ".join(parts) + "."
        if self.interrupted:
            text += " Run the same command again to resume."
        return text
