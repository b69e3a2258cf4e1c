"""paraflex_torch: a real (tiny) DiT served by paraflex across processes on torch.distributed.

  tiny_dit   the model, its sampler, and the single-process reference
  comm       group-free collectives (Ulysses all_to_all, gather, migration edges) from isend/irecv
  protocol   the driver <-> worker control channel
  worker     one device = one process: state store, task bodies, fault injection
  executor   TorchExecutor: paraflex's Executor protocol in the driver process
  driver     DoubleRuntime: a pure-Python stand-in for the scheduler, for tests

See docs/torch-executor.md.
"""

from .tiny_dit import DiTConfig, Shape, TinyDiT, reference_generate, request_seed, shard_range

__all__ = ["DiTConfig", "Shape", "TinyDiT", "reference_generate", "request_seed", "shard_range"]
