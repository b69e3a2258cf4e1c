"""A scheduling policy written in Python: earliest deadline first, with drop.

At every rescheduling point (an arrival, the end of a task) paraflex calls decide(view, out):
  1. waiting requests in deadline order (ties: arrival order; no deadline: last);
  2. a request that cannot meet its deadline even alone at its fastest degree is dropped
     ("deadline_unreachable"): it is a miss either way, and running it late takes devices from
     requests that can still make it;
  3. every other one gets the smallest degree whose estimated finish (migration included) meets its
     deadline - the fastest degree that fits when none does - on its own devices when it keeps its
     degree (no migration), else on a node-aware best-fit group.
This is GF-DiT's EDF-best-fit plus the drop rule, in about 30 lines; the built-in "edf-best-fit" and
"slo-aware" policies do the same in C++. Run it:

    PYTHONPATH=<build>/examples/python python3 edf_drop_policy.py [workload.csv]
"""

import sys

import paraflex


class EdfWithDrop:
    name = "py-edf-drop"

    def decide(self, view, out):
        free = view.free_devices()  # a copy: this call hands devices out of it
        left = free.count()
        waiting = view.waiting()
        if len(waiting) > 1:
            waiting.sort(key=lambda h: view.request(h).deadline)  # stable: ties keep arrival order
        for h in waiting:
            if paraflex.deadline_unreachable(view, h):
                out.drop(h, "deadline_unreachable")
                continue
            if left == 0:
                continue  # still look at the rest: some may have to be dropped
            deadline = view.request(h).deadline
            chosen = 0
            for k in view.allowed_degrees(h):  # increasing
                if k > left:
                    break
                chosen = k  # the widest that fits: the fastest when none meets the deadline
                if paraflex.estimated_finish(view, h, k, free) <= deadline:
                    break
            if chosen == 0:
                continue
            group = paraflex.place(view, h, chosen, free)
            out.assign(h, group)
            free.reset_group(group)
            left -= chosen


def main(argv):
    workload = argv[1] if len(argv) > 1 else None  # None: the embedded default workload
    for policy in (EdfWithDrop(), "edf-best-fit", "slo-aware"):
        r = paraflex.simulate(workload=workload, policy=policy)
        print(f"{r['policy']:<14} completed {r['completed']:>4}  dropped {r['dropped']:>4}  "
              f"SLO {100 * (r['slo_attainment'] or 0):5.1f} %  wall {r['scheduler']['wall_s']:.3f} s")


if __name__ == "__main__":
    main(sys.argv)
