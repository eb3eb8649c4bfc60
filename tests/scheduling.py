"""How ``make test`` shares the suite between pytest-xdist workers (``pytest -n N --dist loadgroup``).

A module's tests run on one worker, so its module fixtures (multi-seed training runs) are computed once. The
modules that use the Flower session fixture ``simulated`` run on one worker together, so the Simulation Engine
runs their federations once. The longest units are handed out first, so that none of them starts last.

xdist's own ``loadgroup`` cannot do this under pytest >= 9.2: it passes a test's group as a suffix it writes into
the test id, which pytest 9.2 no longer lets it change, so every test became a unit of its own and each worker
recomputed the module fixtures it met (pytest-xdist 3.8; its issue 1386). This scheduler keeps xdist's unit
machinery (``LoadScopeScheduling``) and reads the unit from the test id itself.
"""

from __future__ import annotations

from collections import OrderedDict

#: The unit of every module that uses the session fixture ``simulated`` (tests/flower/conftest.py).
FLOWER_SIMULATION_UNIT = "tests/flower: modules sharing the Simulation Engine run"
FLOWER_SIMULATION_MODULES = frozenset(
    f"tests/flower/test_flower_{name}.py"
    for name in ("core", "deployment", "failures", "methods", "resume", "strategies")
)
#: Modules of minute-long tests that share no fixture: each test is a unit, so both workers can take a share.
PER_TEST_MODULES = frozenset({"tests/flower/test_flower_deployment_faults.py"})
#: Units from the longest to the shorter, as measured in a ``make test-floor`` on 2 idle cores (its durations, summed
#: per unit: 230 s for the install tests down to 40 s). Only the order matters: the longest start first, so no long
#: unit starts last while the other worker idles; a unit not named here follows them, in xdist's order.
LONGEST_FIRST = (
    "tests/test_install.py",
    "tests/acgkd/test_acgkd_distill.py",
    "tests/bye/test_backdoor.py",
    "tests/federated/test_federated_core.py",
    FLOWER_SIMULATION_UNIT,
    "tests/flower/test_flower_deployment_faults.py",
    "tests/flower/test_flower_run_cli.py",
    "tests/test_readme.py",
    "tests/ggeur/test_ggeur_trainer.py",
    "tests/fpl/test_fpl.py",
    "tests/foundation/test_lazy_registration.py",
    "tests/bye/test_defence.py",
)


def unit_of(nodeid: str) -> str:
    """The unit of work a test id belongs to: its module, the Flower simulation unit, or the test itself."""
    module = nodeid.split("::", 1)[0]
    if module in FLOWER_SIMULATION_MODULES:
        return FLOWER_SIMULATION_UNIT
    if module in PER_TEST_MODULES:
        return nodeid
    return module


def longest_first(units: list[str]) -> list[str]:
    """``units`` with those of LONGEST_FIRST first, in its order; the others keep their order after them."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    return sorted(units, key=lambda unit: rank.get(unit.split("::", 1)[0], len(rank)))


def make_scheduler(config, log):
    """A ``LoadScopeScheduling`` whose units are :func:`unit_of` and whose queue is :func:`longest_first`."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleUnitScheduling(LoadScopeScheduling):
        _queue_ordered = False

        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

        def _assign_work_unit(self, node) -> None:
            # xdist fills its queue just before the first assignment; order it once, there.
            if not self._queue_ordered:
                self._queue_ordered = True
                self.workqueue = OrderedDict(
                    (unit, self.workqueue[unit]) for unit in longest_first(list(self.workqueue))
                )
            super()._assign_work_unit(node)

    return ModuleUnitScheduling(config, log)
