"""The grading child: code that runs in the single-user environment's Python, never in hubfleet's.

:mod:`.forkserver` is the script :mod:`hubfleet.edu.assignments.sandbox` starts (as root) once per grading slot; it
imports IPython once and forks a single-use, sandboxed process per notebook. Standard library and IPython only:
nothing here imports hubfleet. The parts:

* :mod:`.protocol` — length-prefixed JSON frames (the grader imports it too);
* :mod:`.jail` — namespaces, a minimal root file system, resource limits, dropping privileges;
* :mod:`.shell` — the kernel-like IPython shell, and how student cells and test cells run;
* :mod:`.hygiene` — the clean state taken once in the forkserver, and restoring it before and during test cells;
* :mod:`.guard` — comparisons in test cells that an object of the student's own making cannot fake.
"""
