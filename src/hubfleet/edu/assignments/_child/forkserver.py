"""The grading forkserver's script: run as root by the single-user environment's Python (``python -I -B
forkserver.py CONTROL_FD GRADER_PID PRELOAD_JSON``); see :mod:`_child.server`. Standard library and IPython only."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _child import server

del sys.path[0]

if __name__ == "__main__":
    server.main()
