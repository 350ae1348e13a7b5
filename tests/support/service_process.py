"""The lifecycle shared by the tests' helper servers run as subprocesses
(the LiteLLM proxy, Phoenix): a process and a scratch folder, both gone
after ``stop()`` or the ``with`` block."""

from __future__ import annotations

import shutil
import subprocess
from typing import Self


class ServiceProcess:
    """A subclass's ``start()`` sets ``_proc`` and ``_dir`` and returns ``self``."""

    _proc: subprocess.Popen[bytes] | None = None
    _dir: str | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        """Terminates the process (killed after ``timeout`` s) and removes its folder."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
