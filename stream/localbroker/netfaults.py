"""Network faults between the nodes of a local cluster: network namespaces, veths, a bridge.

With ``stream broker start --nodes 3 --netns`` (root only) each node runs in its own
network namespace, joined to a Linux bridge in the root namespace by a veth pair::

    root namespace                                  namespace stream-<port>-<n>
    bridge stbr<port>  10.77.<port % 256>.1/24  ──  veth stv<port>n<n>  ═══  eth0  10.77.<p>.<10+n>

The subnet is private to these namespaces and nothing routes anywhere else: the
namespaces have no default route and the root namespace reaches them only because
the bridge has an address in it. Clients in the root namespace (tests, the worker)
connect to ``10.77.<p>.<10+n>:<node port>``. Faults act on the root-side veth of one
node, never on loopback:

* ``isolate`` / ``heal``: ``ip link set <veth> down|up`` — the node can reach nobody
  and nobody can reach it, while its process keeps running (a network partition).
* ``degrade`` / ``clear``: ``tc qdisc replace dev <veth> root netem delay 200ms loss 5%``
  — traffic *to* the node is delayed and dropped. Needs the kernel's ``sch_netem``;
  where it is missing (:class:`NetemUnavailableError`) the exact ``tc`` error is kept.

Without namespaces (not root, or the sandbox refuses ``ip netns add`` — see
:func:`netns_unavailable_reason`), ``pause`` / ``resume`` (SIGSTOP / SIGCONT of the
node's JVM) make a node unresponsive instead: its connections stay open but it
answers nothing, which is what the rest of the cluster sees of a hung host.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from stream.localbroker.errors import LocalBrokerError

SUBNET_PREFIX = "10.77"
_IP_TIMEOUT_S = 15.0


class NetworkFaultError(LocalBrokerError):
    """A namespace, link or qdisc could not be set up or changed."""


class NetemUnavailableError(NetworkFaultError):
    """``tc ... netem`` is refused (the kernel lacks ``sch_netem``, or ``tc`` is missing)."""


@dataclass(frozen=True)
class NetLayout:
    """Names and addresses of one cluster's namespaces (a pure function of its port)."""

    port: int
    nodes: int

    @property
    def octet(self) -> int:
        return self.port % 256

    @property
    def subnet(self) -> str:
        return f"{SUBNET_PREFIX}.{self.octet}.0/24"

    @property
    def bridge(self) -> str:
        return f"stbr{self.port}"

    @property
    def bridge_address(self) -> str:
        return f"{SUBNET_PREFIX}.{self.octet}.1"

    def namespace(self, node: int) -> str:
        return f"stream-{self.port}-{node}"

    def veth(self, node: int) -> str:
        """The root-namespace end of the node's veth pair (on the bridge)."""
        return f"stv{self.port}n{node}"

    def address(self, node: int) -> str:
        return f"{SUBNET_PREFIX}.{self.octet}.{10 + node}"

    def exec_prefix(self, node: int) -> list[str]:
        """Command prefix that runs a program inside the node's namespace (it execs, same pid)."""
        return [_ip(), "netns", "exec", self.namespace(node)]


def _ip() -> str:
    found = shutil.which("ip")
    if found is None:
        raise NetworkFaultError(
            "`ip` was not found on PATH; install it with apt-get install iproute2"
        )
    return found


def _run(*arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            list(arguments), capture_output=True, text=True, timeout=_IP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkFaultError(f"`{' '.join(arguments)}` failed: {exc}") from exc
    if check and result.returncode != 0:
        raise NetworkFaultError(
            f"`{' '.join(arguments)}` failed (exit code {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result


@functools.cache
def netns_unavailable_reason() -> str | None:
    """None if this process may create network namespaces, else why not (the exact error).

    Probes once per process by creating and deleting a throw-away namespace.
    """
    if os.geteuid() != 0:
        return f"network namespaces need root (this process runs as uid {os.geteuid()})"
    try:
        ip = _ip()
    except NetworkFaultError as exc:
        return str(exc)
    probe = f"stream-probe-{uuid.uuid4().hex[:8]}"
    try:
        _run(ip, "netns", "add", probe)
    except NetworkFaultError as exc:
        return str(exc)
    _run(ip, "netns", "del", probe, check=False)
    return None


def setup(layout: NetLayout) -> None:
    """Create the bridge, the namespaces and the veth pairs (idempotent)."""
    ip = _ip()
    if not _link_exists(layout.bridge):
        _require_subnet_unused(layout)
        _run(ip, "link", "add", layout.bridge, "type", "bridge")
        _run(ip, "addr", "add", f"{layout.bridge_address}/24", "dev", layout.bridge)
    _run(ip, "link", "set", layout.bridge, "up")
    for node in range(1, layout.nodes + 1):
        setup_node(layout, node)


def setup_node(layout: NetLayout, node: int) -> None:
    ip = _ip()
    namespace = layout.namespace(node)
    veth = layout.veth(node)
    if not Path("/run/netns", namespace).exists():
        _run(ip, "netns", "add", namespace)
    if _link_exists(veth):
        return  # set up before; an isolated node's link stays down until heal()
    _run(ip, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
    _run(ip, "-n", namespace, "addr", "add", f"{layout.address(node)}/24", "dev", "eth0")
    _run(ip, "link", "set", veth, "master", layout.bridge)
    _run(ip, "link", "set", veth, "up")
    _run(ip, "-n", namespace, "link", "set", "lo", "up")
    _run(ip, "-n", namespace, "link", "set", "eth0", "up")


def teardown(layout: NetLayout) -> None:
    """Delete the veths, namespaces and bridge (what is already gone is no error)."""
    ip = _ip()
    for node in range(1, layout.nodes + 1):
        _run(ip, "link", "del", layout.veth(node), check=False)  # deletes the peer too
        _run(ip, "netns", "del", layout.namespace(node), check=False)
    _run(ip, "link", "del", layout.bridge, check=False)


def isolate(layout: NetLayout, node: int) -> None:
    """Cut the node's only link: a network partition around it (the process keeps running)."""
    _run(_ip(), "link", "set", layout.veth(node), "down")


def heal(layout: NetLayout, node: int) -> None:
    _run(_ip(), "link", "set", layout.veth(node), "up")


def is_isolated(layout: NetLayout, node: int) -> bool:
    try:
        flags = int(Path("/sys/class/net", layout.veth(node), "flags").read_text(), 16)
    except (OSError, ValueError):
        return False
    return not flags & 0x1  # IFF_UP


def degrade(
    layout: NetLayout, node: int, delay_ms: float = 200.0, loss_percent: float = 5.0
) -> None:
    """``tc qdisc replace dev <veth> root netem delay <ms> loss <pct>``: slow, lossy link."""
    tc = shutil.which("tc")
    if tc is None:
        raise NetemUnavailableError(
            "`tc` was not found on PATH; install it with apt-get install iproute2"
        )
    command = [tc, "qdisc", "replace", "dev", layout.veth(node), "root", "netem"]
    command += ["delay", f"{delay_ms:g}ms", "loss", f"{loss_percent:g}%"]
    result = _run(*command, check=False)
    if result.returncode != 0:
        error = (result.stderr or result.stdout).strip()
        raise NetemUnavailableError(
            f"`{' '.join(command)}` failed (exit code {result.returncode}): "
            f"{error}" + (" — this kernel has no sch_netem" if "unknown" in error else "")
        )


def clear(layout: NetLayout, node: int) -> None:
    """Remove any qdisc ``degrade`` put on the node's veth (none there is no error)."""
    tc = shutil.which("tc")
    if tc is not None:
        _run(tc, "qdisc", "del", "dev", layout.veth(node), "root", check=False)


def pause(pid: int, timeout: float = 5.0) -> None:
    """SIGSTOP: the node stops answering (its sockets stay open), as a hung host would.

    Returns once the process is seen stopped (signal delivery is asynchronous).
    """
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while not is_paused(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def is_paused(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] in ("T", "t")


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _require_subnet_unused(layout: NetLayout) -> None:
    """Refuse to add a second bridge with our address (another cluster's port ≡ ours mod 256)."""
    shown = _run(_ip(), "-o", "addr", "show", "to", layout.subnet, check=False).stdout.strip()
    if shown:
        raise NetworkFaultError(
            f"the test subnet {layout.subnet} is already in use ({shown.split()[1]}); "
            f"choose another --port (the subnet is 10.77.<port mod 256>.0/24)"
        )
