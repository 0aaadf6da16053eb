"""gentwin.fast, but the first process to make a Generator once $GENTWIN_KILL_ONCE names a file kills itself
there (SIGKILL), after creating that file with its pid: a Ray worker that dies mid-task, once
(tests/test_check_ray.py)."""

from __future__ import annotations

import os
import signal

from tests.broken_impls import BASE, base_attribute as __getattr__  # noqa: F401


class Generator(BASE.Generator):
    def __init__(self, model, params):
        marker = os.environ.get("GENTWIN_KILL_ONCE")
        if marker:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # only one process wins it
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        super().__init__(model, params)
