"""Bytecode for a new environment: reuse what other environments compiled from the same files, compile the rest.

Standard library only: the builder copies this file into the build's work folder and runs it with the new
environment's Python, as the build account:

    python -I bytecode.py PREFIX SHOWN_PREFIX [OTHER_ENVIRONMENT …]

Package files come from one cache by hard link, so a source file in PREFIX that is the same inode as one in another
environment compiles to the same bytes there, as long as the path written into the bytecode is the same: it is
SHOWN_PREFIX, not the environment's folder (Python's import system puts the real path back when it loads the file).
Such bytecode is linked instead of compiled again; `compileall` then compiles what is left (it skips bytecode whose
header matches its source's size and time, which a linked file does).
"""

from __future__ import annotations

import compileall
import importlib.util
import os
import sys
from pathlib import Path


def sources(root: Path) -> dict[tuple[int, int], str]:
    """(device, inode) → path of every shared (hard-linked) Python source under `root`."""
    found = {}
    for folder, dirs, files in os.walk(root):
        if "__pycache__" in dirs:
            dirs.remove("__pycache__")
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                info = os.lstat(path)
                if info.st_nlink > 1:
                    found[(info.st_dev, info.st_ino)] = path
    return found


def reuse(prefix: Path, others: list[Path]) -> int:
    """Link into `prefix` the bytecode other environments hold for the very same source files; how many."""
    wanted = sources(prefix)
    linked = 0
    for other in others:
        if not wanted:
            break
        for key, theirs in sources(other).items():
            mine = wanted.get(key)
            if mine is None:
                continue
            compiled = importlib.util.cache_from_source(theirs)
            target = importlib.util.cache_from_source(mine)
            if os.path.isfile(compiled) and not os.path.islink(compiled) and not os.path.exists(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.link(compiled, target)
                linked += 1
            del wanted[key]
    return linked


def main(argv: list[str]) -> int:
    prefix, shown, *others = argv
    linked = reuse(Path(prefix), [Path(other) for other in others])
    print(f"bytecode of {linked} files reused from other environments", flush=True)
    if not compileall.compile_dir(prefix, quiet=1, stripdir=prefix, prependdir=shown, workers=0):
        # Files no Python 3 compiles (test data, templates named .py): Python never imports them either.
        print("some files did not compile (see above): left as they are", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
