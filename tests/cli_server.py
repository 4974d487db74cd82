"""A ``cmmd`` web server (``mos serve``, ``app``) as a subprocess on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CliServer:
    """``python -m cmmd.cli ARGS --port PORT``, waited on until ``/`` answers (at most ``timeout`` s)."""

    def __init__(self, args: list[str], port: int, timeout: float = 60.0) -> None:
        import httpx

        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "cmmd.cli", *args, "--port", str(port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read()}")
            try:
                httpx.get(self.url + "/", timeout=1.0)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"server did not start within {timeout:g} s") from None
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc.stdout.close()
