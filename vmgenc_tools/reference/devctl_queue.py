"""The devctl(4) event queue (``sys/kern/kern_devctl.c``).

- ``devctl_notify`` builds ``!system=S subsystem=SS type=T[ data]\\n``; ``devaddq``
  builds ``+dev at LOCATION PNPINFO on PARENT\\n`` (``-`` detach, ``?`` nomatch).
  No timestamp: devd adds ``$timestamp`` when it reads the record.
- Each record is built in a fixed ``DEVCTL_BUFFER`` (1024 - sizeof(void *)) sbuf;
  a record that does not fit (with its NUL) is dropped.
- The queue holds ``hw.bus.devctl_queue`` records (default 1000); when it is full
  the oldest queued record is reused (dropped) before the new one is built, even
  one that then overflows; length 0 drops every new record.
- A read returns exactly one record (``devread``).
"""

from __future__ import annotations

from .. import simstate

DEVCTL_BUFFER = 1024 - 8          # 1024 - sizeof(void *) on LP64
DEVCTL_DEFAULT_QUEUE_LEN = 1000
QUEUE_OID = "hw.bus.devctl_queue"


class DevctlQueue:
    """The queue lives in the VM's state dict; its length in the kernel.tab OID."""

    def __init__(self, state: dict, kernel: simstate.KernelState) -> None:
        state.setdefault("queue", [])
        state.setdefault("dropped", 0)
        state.setdefault("total", 0)
        self.state = state
        self.kernel = kernel

    @property
    def queue_length(self) -> int:
        node = self.kernel.nodes.get(QUEUE_OID)
        return simstate.decode_int("int", node.value) if node else DEVCTL_DEFAULT_QUEUE_LEN

    @property
    def records(self) -> list[str]:
        return self.state["queue"]

    def _queue(self, record: str) -> None:
        """``devctl_alloc_dei``, build the record in its buffer, then ``devctl_queue``.

        The buffer is taken first: when the zone is full the oldest queued record
        is reused, so it is lost even if the new record then overflows the
        buffer and is freed (``sbuf_finish() != 0`` → ``devctl_free_dei``).
        """
        length = self.queue_length
        if length <= 0:
            self.state["dropped"] += 1  # devctl_alloc_dei() returns NULL
            return
        q = self.state["queue"]
        while len(q) >= length:
            q.pop(0)
            self.state["dropped"] += 1
        if len(record.encode()) > DEVCTL_BUFFER - 1:
            self.state["dropped"] += 1  # overflow -> drop it
            return
        q.append(record)
        self.state["total"] += 1

    def devctl_notify(self, system: str | None, subsystem: str | None, type_: str | None,
                      data: str | None) -> None:
        """``devctl_notify(system, subsystem, type, data)``."""
        if system is None or subsystem is None or type_ is None:
            return
        line = f"!system={system} subsystem={subsystem} type={type_}"
        if data is not None:
            line += " " + data
        self._queue(line + "\n")

    def devaddq(self, type_: str, what: str, location: str, pnpinfo: str,
                parent: str | None) -> None:
        """``devaddq(type, what, dev)``: attach (+), detach (-) and nomatch (?) records."""
        parstr = parent if parent is not None else "."
        self._queue(f"{type_}{what} at {location} {pnpinfo} on {parstr}\n")

    def devread(self) -> str | None:
        """One ``read(2)`` of /dev/devctl: the oldest record, or None (EAGAIN) when empty."""
        q = self.state["queue"]
        return q.pop(0) if q else None
