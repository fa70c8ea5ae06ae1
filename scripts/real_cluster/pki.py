"""Certificates and service-account keys for one cluster, made on the spot with openssl."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from real_cluster.errors import ComponentError

DAYS = "7"  # a test cluster lives for minutes; a week leaves room for a paused debugger
CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: KeyPair
    apiserver: KeyPair  # serving, for 127.0.0.1
    admin: KeyPair  # system:masters
    controller_manager: KeyPair  # system:kube-controller-manager
    scheduler: KeyPair  # system:kube-scheduler
    service_account_key: Path  # signs service-account tokens
    service_account_public: Path  # verifies them


def openssl(*args: str, log: Path) -> None:
    with log.open("a") as out:
        done = subprocess.run(["openssl", *args], stdout=out, stderr=subprocess.PIPE, text=True)
        out.write(done.stderr)
    if done.returncode != 0:
        cause = done.stderr.strip().splitlines()[-1:] or [f"exited {done.returncode}"]
        raise ComponentError("certificates", f"openssl {args[0]}: {cause[0]}", log)


def make_ca(directory: Path, log: Path) -> KeyPair:
    pair = KeyPair(directory / "ca.crt", directory / "ca.key")
    openssl(
        "req",
        "-x509",
        "-new",
        *CURVE,
        "-nodes",
        "-keyout",
        str(pair.key),
        "-out",
        str(pair.cert),
        "-days",
        DAYS,
        "-subj",
        "/CN=canary-real-cluster-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        log=log,
    )
    return pair


def issue(
    ca: KeyPair, directory: Path, name: str, subject: str, extensions: str, log: Path
) -> KeyPair:
    """A key and a certificate signed by ``ca``, with the given X.509 v3 extensions."""
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    request = directory / f"{name}.csr"
    extfile = directory / f"{name}.ext"
    extfile.write_text(extensions)
    openssl(
        "req",
        "-new",
        *CURVE,
        "-nodes",
        "-keyout",
        str(pair.key),
        "-out",
        str(request),
        "-subj",
        subject,
        log=log,
    )
    openssl(
        "x509",
        "-req",
        "-in",
        str(request),
        "-CA",
        str(ca.cert),
        "-CAkey",
        str(ca.key),
        "-set_serial",
        str(secrets.randbits(63) | 1),
        "-days",
        DAYS,
        "-extfile",
        str(extfile),
        "-out",
        str(pair.cert),
        log=log,
    )
    request.unlink()
    extfile.unlink()
    return pair


def client_extensions() -> str:
    return "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"


def serving_extensions(service_ip: str) -> str:
    names = [
        "IP:127.0.0.1",
        f"IP:{service_ip}",
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
    ]
    return (
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        f"subjectAltName={','.join(names)}\n"
    )


def make_pki(directory: Path, service_ip: str, log: Path) -> Pki:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # keys: the owner's only
    ca = make_ca(directory, log)

    def client(name: str, subject: str) -> KeyPair:
        return issue(ca, directory, name, subject, client_extensions(), log)

    sa_key, sa_public = directory / "service-account.key", directory / "service-account.pub"
    openssl(
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        str(sa_key),
        log=log,
    )
    openssl("pkey", "-in", str(sa_key), "-pubout", "-out", str(sa_public), log=log)
    return Pki(
        ca=ca,
        apiserver=issue(
            ca, directory, "apiserver", "/CN=kube-apiserver", serving_extensions(service_ip), log
        ),
        admin=client("admin", "/O=system:masters/CN=canary-admin"),
        controller_manager=client("controller-manager", "/CN=system:kube-controller-manager"),
        scheduler=client("scheduler", "/CN=system:kube-scheduler"),
        service_account_key=sa_key,
        service_account_public=sa_public,
    )
