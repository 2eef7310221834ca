"""Device buffers that a helper of a network (its masks, its image inputs) keeps between batches:
allocated through the network (which frees whatever is left when it closes), grown as batches
need, freed with `free` in the thread that holds the network's context."""
from __future__ import annotations


class GrowingBuffers:
    def __init__(self, net, owner: str):
        self.net = net
        self.owner = owner                     # "the masks'", for out-of-memory messages
        self._buffers: dict = {}

    def get(self, what: str, nbytes: int):
        """A device buffer of at least nbytes (at least twice the last size when it grows)."""
        have = self._buffers.get(what)
        if have is None or have[1] < nbytes:
            if have is not None:                      # the network frees the rest at close
                del self._buffers[what]               # (gone even if the new one fails)
                self.net._allocations.remove(have[0])
                have[0].free()
            size = max(nbytes, 2 * have[1] if have else nbytes, 256)
            self._buffers[what] = (self.net._alloc_bytes(size, f"{self.owner} {what}"), size)
        return self._buffers[what][0]

    def free(self) -> None:
        for mem, _ in self._buffers.values():
            self.net._allocations.remove(mem)
            mem.free()
        self._buffers.clear()
