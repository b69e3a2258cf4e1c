"""The control channel between the driver (rank 0) and the workers, on torch.distributed (gloo).

A message is a fixed header, int64[HEADER]: [kind, payload bytes, a, b, c, 0, 0, 0], optionally
followed by a payload (a pickled object as a uint8 tensor) on the next tag. Senders hold a lock per
destination so a header and its payload are never interleaved with another message; between one
pair of ranks messages arrive in the order they were sent.

driver -> worker (tags DOWN, DOWN_DATA):
  TASK      payload: the task (dict)                 run it after everything queued before it
  COMMIT    a = launch id, b = request               the launch succeeded on every rank: keep its state
  DISCARD   a = launch id, b = request               it failed somewhere: the state is as before it
  DROP      b = request                              forget the request's state (released, or stale)
  HEARTBEAT                                          keeps the worker's receive within the timeout
  QUERY                                              reply INFO once everything queued before has run
  STOP                                               leave the loop, shut down
worker -> driver (tags UP, UP_DATA):
  READY     payload: {pid, host, device}             once, after start-up
  REPORT    a = launch id, b = 1 ok / 0 failed; payload (optional): {error, output, ...}
  INFO      payload: {committed: [requests], staged: n, steps_run: n}
  HEARTBEAT
  BYE                                                the worker leaves after STOP

Every receive on gloo waits at most the process group's timeout, and a timeout closes every
connection of the process; heartbeats every timeout/4 keep idle channels from timing out.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any, Optional

import torch
import torch.distributed as dist

HEADER = 8
DOWN, DOWN_DATA, UP, UP_DATA = 1, 2, 3, 4

TASK, COMMIT, DISCARD, DROP, HEARTBEAT, STOP, QUERY = 1, 2, 3, 4, 5, 6, 7
READY, REPORT, BYE, INFO = 11, 12, 13, 14

NAMES = {TASK: "task", COMMIT: "commit", DISCARD: "discard", DROP: "drop", HEARTBEAT: "heartbeat", STOP: "stop",
         QUERY: "query", READY: "ready", REPORT: "report", BYE: "bye", INFO: "info"}


class Channel:
    """One direction-pair of the control channel with one peer rank."""

    def __init__(self, peer: int, send_tags: tuple[int, int], recv_tags: tuple[int, int], group=None):
        self.peer = peer
        self.send_tags = send_tags
        self.recv_tags = recv_tags
        self.group = group
        self.lock = threading.Lock()

    def send(self, kind: int, a: int = 0, b: int = 0, c: int = 0, payload: Any = None) -> None:
        data: Optional[torch.Tensor] = None
        if payload is not None:
            raw = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
            data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        hdr = torch.tensor([kind, 0 if data is None else data.numel(), a, b, c, 0, 0, 0], dtype=torch.int64)
        with self.lock:
            dist.send(hdr, self.peer, group=self.group, tag=self.send_tags[0])
            if data is not None:
                dist.send(data, self.peer, group=self.group, tag=self.send_tags[1])

    def recv(self) -> tuple[int, int, int, int, Any]:
        """Blocks for the next message: (kind, a, b, c, payload or None)."""
        hdr = torch.zeros(HEADER, dtype=torch.int64)
        dist.recv(hdr, self.peer, group=self.group, tag=self.recv_tags[0])
        kind, n, a, b, c = (int(v) for v in hdr[:5])
        payload = None
        if n > 0:
            data = torch.empty(n, dtype=torch.uint8)
            dist.recv(data, self.peer, group=self.group, tag=self.recv_tags[1])
            payload = pickle.loads(data.numpy().tobytes())
        return kind, a, b, c, payload


def driver_channel(worker_rank: int, group=None) -> Channel:
    return Channel(worker_rank, (DOWN, DOWN_DATA), (UP, UP_DATA), group)


def worker_channel(group=None) -> Channel:
    return Channel(0, (UP, UP_DATA), (DOWN, DOWN_DATA), group)
