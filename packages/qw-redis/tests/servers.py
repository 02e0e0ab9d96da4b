"""Redis servers the tests start themselves, on spare loopback ports, and always stop."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def spare_port() -> int:
    """A loopback port that is free, and whose cluster-bus port (+10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 29999)
        if _free(port) and _free(port + 10000):
            return port
    raise RuntimeError("no spare loopback port found")


@dataclass
class Server:
    """One redis-server process we started."""

    port: int
    directory: Path
    args: tuple[str, ...]
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
            *self.args,
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                try:
                    # Ready means loaded: a server replaying its AOF answers LOADING.
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"redis-server on {self.port} exited; see its log")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {self.port} did not come up")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL); safe to call twice."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@contextlib.contextmanager
def single_server(directory: Path, args: Sequence[str]) -> Iterator[Server]:
    server = Server(spare_port(), directory, tuple(args))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def cluster(directory: Path, masters: int = 3) -> Iterator[list[Server]]:
    """A ``masters``-node Redis Cluster (no replicas), torn down whatever happens."""
    servers: list[Server] = []
    try:
        for i in range(masters):
            port = spare_port()
            node = Server(
                port,
                directory / f"node{i}",
                (
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    "5000",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ),
            )
            servers.append(node)
            node.start()
        create = subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{s.port}" for s in servers),
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {create.stdout!r}")
        _wait_cluster_ok(servers)
        yield servers
    finally:
        for node in servers:
            node.stop()


def _wait_cluster_ok(servers: Sequence[Server], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for node in servers:
            client = redis.Redis(port=node.port, decode_responses=True)
            try:
                info = client.execute_command("CLUSTER", "INFO")
                if isinstance(info, dict):
                    states.append(info.get("cluster_state"))
                else:
                    states.append(_field(info, "cluster_state"))
            finally:
                client.close()
        if all(state == "ok" for state in states):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"cluster never reached cluster_state:ok: {states}")
        time.sleep(0.1)


def probe(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def need_binaries() -> None:
    if not Path(REDIS_SERVER).exists() or not Path(REDIS_CLI).exists():
        pytest.skip(f"SKIPPED LOUDLY: redis-server/redis-cli not found ({REDIS_SERVER})")


def _field(info: str, name: str) -> str | None:
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return None


def drop_namespaces(url: str, namespaces: set[str]) -> None:
    """Delete every key of ``namespaces`` from the single server at ``url``."""
    if not namespaces:
        return
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        doomed = [
            key
            for key in client.scan_iter(match="qw:{*", count=1000)
            # A shard's tag is "<namespace>/<shard>".
            if key[4 : key.find("}")].split("/")[0] in namespaces
        ]
        for i in range(0, len(doomed), 500):
            client.unlink(*doomed[i : i + 500])
    finally:
        client.close()
