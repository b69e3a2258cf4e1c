"""paraflex: GPU-parallelism scheduling for Diffusion Transformer serving.

The C++ core is the extension module ``paraflex._core``; this package re-exports it and adds a few
Python helpers. See docs/python.md for the three uses: simulate(), policies written in Python, and
the embedded Scheduler.
"""

# A script run from the source tree (examples/python/) finds this directory first; the extension
# lives in the build tree's copy of the package. extend_path merges every `paraflex/` directory on
# sys.path into the package, so `._core` is found in either.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

from ._core import *  # noqa: E402,F401,F403


def slo_aware(admission=None, order=None, sizing=None, placement=None, *, name="slo-aware", admission_mode="relaxed",
              capacity=0.9, reserve=0.1, margin=0.2, chunk=1, best_effort_age=10.0, widen=True, hold=True,
              max_batch=1, batch_margin=None, batch_saving=0.25, backfill_max_gpus=64):
    """The built-in "slo-aware" policy as a ComposedPolicy, with any of its four parts replaced.

    With no part given it behaves exactly like policy="slo-aware". The keywords are the registry's
    parameters with the same defaults, except: the registry's admission=strict is
    admission_mode="strict" (admission is the part), widen and hold are bools, and there is no
    exact_limit (the admission part keeps 4096). A part may be a built-in part
    object or any Python object with the part's method, e.g. placement=MyPlacement() with
    place(view, h, k, available, preferred). max_batch > 1 turns on selective batching; batch_margin
    defaults to margin + 0.1, as in the registry.
    """
    return ComposedPolicy(  # noqa: F405
        admission if admission is not None else SloAdmission(admission_mode, capacity, reserve, best_effort_age),  # noqa: F405
        order if order is not None else PriorityEdfOrder(best_effort_age),  # noqa: F405
        sizing if sizing is not None else SmallestMeetingDegree(margin),  # noqa: F405
        placement if placement is not None else StickyPlacement(),  # noqa: F405
        name=name, chunk=chunk, widen=widen, hold=hold, max_batch=max_batch,
        batch_margin=min(0.9, margin + 0.1) if batch_margin is None else batch_margin, batch_saving=batch_saving,
        backfill_max_gpus=backfill_max_gpus)


def edf_best_fit(admission=None, order=None, sizing=None, placement=None, *, name="edf-best-fit"):
    """The built-in "edf-best-fit" policy (GF-DiT) as a ComposedPolicy, with any part replaced."""
    return ComposedPolicy(  # noqa: F405
        admission if admission is not None else AdmitAll(),  # noqa: F405
        order if order is not None else EdfOrder(),  # noqa: F405
        sizing if sizing is not None else SmallestMeetingDegree(0.0),  # noqa: F405
        placement if placement is not None else StickyPlacement(),  # noqa: F405
        name=name, chunk=1, widen=True, hold=False)
