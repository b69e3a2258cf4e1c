"""paraflex_torch: a real (tiny) DiT served by paraflex across processes on torch.distributed.

  tiny_dit   the model, its sampler, and the single-process reference
  comm       group-free collectives (Ulysses all_to_all, gather, migration edges) from isend/irecv
  protocol   the driver <-> worker control channel
  worker     one device = one process: state store, task bodies, fault injection
  executor   TorchExecutor: paraflex's Executor protocol in the driver process
  driver     DoubleRuntime: a pure-Python stand-in for the scheduler, for tests

See docs/torch-executor.md.
"""

__all__ = ["DiTConfig", "Shape", "TinyDiT", "reference_generate", "request_seed", "shard_range"]


def __getattr__(name: str):
    """The names above come from tiny_dit on first use, not at import: importing the package first
    would put tiny_dit in sys.modules before ``python -m paraflex_torch.tiny_dit`` runs it (runpy's
    RuntimeWarning)."""
    if name in __all__:
        from . import tiny_dit

        return getattr(tiny_dit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
