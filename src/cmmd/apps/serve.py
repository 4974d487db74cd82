"""What the web apps (``cmmd app``, ``cmmd mos serve``) share about where they listen."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost`` (reachable from this machine only)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url(host: str, port: int, path: str = "/") -> str:
    """The address to open, with an IPv6 ``host`` in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{path}"


def exposure_warning(prog: str, host: str, what: str) -> str | None:
    """The line to print when ``host`` opens the app beyond this machine (None when it does not)."""
    if is_loopback(host):
        return None
    return f"{prog}: listening on {host}: anyone who can reach this machine can {what}"
