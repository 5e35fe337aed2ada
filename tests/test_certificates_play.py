"""playbooks/certificates.yml and the pki role on this machine, without a lab: hosts whose
connection is local, the CA in a throwaway pki_dir. What is issued, to whom, once; what is
re-issued as it nears its end, and the CA that is not; and the roles that install the files
stop with the fix when the certificates step did not run."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from conftest import REPO
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from testkit import playbook

REDIS = "pki-redis"
WORKER = "pki-worker"
LOCAL = {
    "ansible_connection": "local",
    "ansible_python_interpreter": "{{ ansible_playbook_python }}",
}


def inventory(root: Path, redis_vars: dict[str, Any]) -> Path:
    hosts = {
        "all": {
            "vars": LOCAL,
            "children": {
                "redis": {"hosts": {REDIS: {"redis_bind": ["127.0.0.1"]} | redis_vars}},
                "celery_workers": {"hosts": {WORKER: {}}},
            },
        }
    }
    path = root / "hosts.yml"
    path.write_text(yaml.safe_dump(hosts))
    return path


def certificates(root: Path, *args: str, **redis_vars: Any) -> subprocess.CompletedProcess[str]:  # noqa: ANN401
    """certificates.yml, then each host's published pki_issued written to ROOT/issued.json."""
    (root / "run.yml").write_text(
        yaml.safe_dump(
            [
                {"ansible.builtin.import_playbook": str(REPO / "playbooks/certificates.yml")},
                {
                    "name": "Show what was published",
                    "hosts": "redis:celery_workers",
                    "gather_facts": False,
                    "tags": ["always"],
                    "tasks": [
                        {
                            "name": "Write the facts",
                            "ansible.builtin.copy": {
                                "content": "{{ dict(ansible_play_hosts | zip(ansible_play_hosts"
                                " | map('extract', hostvars)"
                                " | map(attribute='pki_issued', default={}))) | to_json }}",
                                "dest": str(root / "issued.json"),
                            },
                            "run_once": True,
                            "delegate_to": "localhost",
                            "check_mode": False,
                        }
                    ],
                },
            ]
        )
    )
    pki = ["-e", json.dumps({"pki_dir": str(root / "pki")})]
    return playbook(str(root / "run.yml"), inventory(root, redis_vars), *pki, *args, timeout=300)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def changed(output: str, host: str) -> int:
    match = re.search(rf"^{host}\s+: ok=\d+\s+changed=(\d+)", output, re.MULTILINE)
    assert match, output[-2000:]
    return int(match.group(1))


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def usages(certificate: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def names(certificate: x509.Certificate) -> list[str]:
    return [str(n.value) for n in certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value]  # fmt: skip


def test_each_side_gets_its_certificate_from_one_ca_once(tmp_path: Path) -> None:
    ok(certificates(tmp_path, redis_tls=True))
    pki = tmp_path / "pki"
    ca = cert(pki / "ca.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server, client = cert(pki / f"{REDIS}.crt"), cert(pki / f"{WORKER}.crt")
    for leaf in (server, client):
        leaf.verify_directly_issued_by(ca)
    assert usages(server) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert names(server) == [REDIS, "localhost", "127.0.0.1"]
    assert usages(client) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert names(client) == [WORKER]
    # The keys stay with the user who runs the deploy.
    assert pki.stat().st_mode & 0o777 == 0o700
    for key in pki.glob("*.key"):
        assert key.stat().st_mode & 0o077 == 0, key
    # What the redis and celery_worker plays hand their roles.
    assert json.loads((tmp_path / "issued.json").read_text()) == {
        host: {"ca": f"{pki}/ca.crt", "cert": f"{pki}/{host}.crt", "key": f"{pki}/{host}.key"}
        for host in (REDIS, WORKER)
    }
    # A second run keeps every key and certificate.
    again = ok(certificates(tmp_path, redis_tls=True))
    assert (changed(again, REDIS), changed(again, WORKER)) == (0, 0)


def test_a_worker_only_run_creates_the_ca_and_only_that_workers_certificate(
    tmp_path: Path,
) -> None:
    ok(certificates(tmp_path, "--limit", WORKER, redis_tls=True))
    pki = tmp_path / "pki"
    assert sorted(p.name for p in pki.glob("*.crt")) == ["ca.crt", f"{WORKER}.crt"]
    cert(pki / f"{WORKER}.crt").verify_directly_issued_by(cert(pki / "ca.crt"))


def test_check_mode_writes_the_build_material_too(tmp_path: Path) -> None:
    ok(certificates(tmp_path, "--check", redis_tls=True))
    assert (tmp_path / "pki" / f"{REDIS}.crt").is_file()


def test_without_tls_there_is_no_ca(tmp_path: Path) -> None:
    ok(certificates(tmp_path))
    assert not (tmp_path / "pki").exists()
    assert json.loads((tmp_path / "issued.json").read_text()) == {REDIS: {}, WORKER: {}}


def test_files_source_issues_nothing(tmp_path: Path) -> None:
    ok(certificates(tmp_path, redis_tls=True, redis_tls_source="files"))
    assert not (tmp_path / "pki").exists()


def test_a_leaf_outliving_its_ca_is_refused(tmp_path: Path) -> None:
    proc = certificates(tmp_path, "-e", '{"pki_certificate_valid_days": 4000}', redis_tls=True)
    assert proc.returncode != 0
    output = " ".join(proc.stdout.split())
    assert "must be at least 1 and below pki_ca_valid_days (3650)" in output, output[-3000:]
    assert not (tmp_path / "pki").exists()


def short_lived(**days: int) -> list[str]:
    """-e for certificates (and a CA) that live only as many days as given."""
    return ["-e", json.dumps({f"pki_{name}": value for name, value in days.items()})]


def days_left(certificate: x509.Certificate) -> float:
    left = certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return left / datetime.timedelta(days=1)


def public_key(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_a_certificate_near_its_end_is_reissued_once_and_the_others_kept(tmp_path: Path) -> None:
    ok(certificates(tmp_path, redis_tls=True))
    pki = tmp_path / "pki"
    worker = cert(pki / f"{WORKER}.crt")
    # The Redis host's certificate again, for 10 days only.
    (pki / f"{REDIS}.crt").unlink()
    short = short_lived(certificate_valid_days=10, renew_within_days=5)
    ok(certificates(tmp_path, "--limit", REDIS, *short, redis_tls=True))
    old = cert(pki / f"{REDIS}.crt")
    assert 9 < days_left(old) <= 10
    # 10 days left is within the default 30: re-issued, from the same key and CA, for 825 days.
    renewed = ok(certificates(tmp_path, redis_tls=True))
    assert changed(renewed, WORKER) == 0
    new = cert(pki / f"{REDIS}.crt")
    assert new.serial_number != old.serial_number
    assert 824 < days_left(new) <= 825
    assert public_key(new) == public_key(old)
    assert names(new) == names(old)
    new.verify_directly_issued_by(cert(pki / "ca.crt"))
    assert cert(pki / f"{WORKER}.crt") == worker
    # Nothing is near its end any more: the next run changes nothing, in check mode neither.
    for args in ((), ("--check",)):
        again = ok(certificates(tmp_path, *args, redis_tls=True))
        assert (changed(again, REDIS), changed(again, WORKER)) == (0, 0), args
    assert cert(pki / f"{REDIS}.crt") == new


def test_an_expired_certificate_is_reissued_in_check_mode_too(tmp_path: Path) -> None:
    ok(certificates(tmp_path, redis_tls=True))
    pki = tmp_path / "pki"
    # The worker's certificate as the CA would have signed it, expired yesterday.
    ca = cert(pki / "ca.crt")
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    now = datetime.datetime.now(datetime.UTC)
    current = cert(pki / f"{WORKER}.crt")
    builder = x509.CertificateBuilder(
        issuer_name=ca.subject,
        subject_name=current.subject,
        public_key=current.public_key(),
        serial_number=x509.random_serial_number(),
        not_valid_before=now - datetime.timedelta(days=30),
        not_valid_after=now - datetime.timedelta(days=1),
        extensions=list(current.extensions),
    )
    expired = builder.sign(ca_key, hashes.SHA256())
    (pki / f"{WORKER}.crt").write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    output = ok(certificates(tmp_path, "--check", redis_tls=True))
    assert (changed(output, REDIS), changed(output, WORKER)) == (0, 1)
    renewed = cert(pki / f"{WORKER}.crt")
    assert renewed.serial_number != expired.serial_number
    assert days_left(renewed) > 824


def test_a_ca_near_its_end_stops_the_run_and_is_kept(tmp_path: Path) -> None:
    short = short_lived(ca_valid_days=20, certificate_valid_days=10, renew_within_days=5)
    ok(certificates(tmp_path, *short, redis_tls=True))
    pki = tmp_path / "pki"
    before = {path.name: path.read_bytes() for path in pki.iterdir()}
    # 20 days left is within the default 30.
    proc = certificates(tmp_path, redis_tls=True)
    assert proc.returncode != 0
    output = " ".join(proc.stdout.split())
    ends = cert(pki / "ca.crt").not_valid_after_utc
    assert (
        f"The bundle's CA ({pki}/ca.crt) expires on {ends:%Y-%m-%d %H:%M:%S} UTC, within"
        " pki_renew_within_days (30 days)."
    ) in output, output[-3000:]
    assert (
        f"move ca.key, ca.crt and ca.csr out of pki_dir ({pki}) and keep them as a backup, then"
        " run deploy.yml"
    ) in output
    # Nothing was replaced or re-issued, not even the host certificates near their end.
    assert {path.name: path.read_bytes() for path in pki.iterdir()} == before


def test_a_new_ca_reissues_every_host_certificate_from_the_same_keys(tmp_path: Path) -> None:
    ok(certificates(tmp_path, redis_tls=True))
    pki = tmp_path / "pki"
    keys = {host: (pki / f"{host}.key").read_bytes() for host in (REDIS, WORKER)}
    for path in pki.glob("ca.*"):
        path.unlink()
    output = ok(certificates(tmp_path, redis_tls=True))
    assert changed(output, REDIS) > 0
    assert changed(output, WORKER) > 0
    ca = cert(pki / "ca.crt")
    for host in (REDIS, WORKER):
        cert(pki / f"{host}.crt").verify_directly_issued_by(ca)
        assert (pki / f"{host}.key").read_bytes() == keys[host]


def test_a_renewal_window_as_long_as_the_validity_is_refused(tmp_path: Path) -> None:
    proc = certificates(tmp_path, *short_lived(renew_within_days=825), redis_tls=True)
    assert proc.returncode != 0
    output = " ".join(proc.stdout.split())
    assert (
        "pki_renew_within_days (825) must be at least 1 and below pki_certificate_valid_days (825)"
    ) in output, output[-3000:]
    assert not (tmp_path / "pki").exists()


INSTALL = """\
- name: Run a role's TLS step without the certificates step
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Install the TLS files
      ansible.builtin.include_role:
        name: ROLE
        tasks_from: tls
"""


def test_the_roles_stop_with_the_fix_without_the_certificates_step(tmp_path: Path) -> None:
    for role, source in (
        ("redis", "redis_tls_source"),
        ("celery_worker", "celery_worker_redis_tls_source"),
    ):
        (tmp_path / f"{role}.yml").write_text(INSTALL.replace("ROLE", role))
        extra = json.dumps({source: "bundle"})
        proc = playbook(str(tmp_path / f"{role}.yml"), "localhost,", "-c", "local", "-e", extra)
        assert proc.returncode != 0, proc.stdout[-3000:]
        output = " ".join(proc.stdout.split())
        assert f"{source} is bundle, but no certificate from the bundle's CA" in output, output
        assert "Run deploy.yml, or import playbooks/certificates.yml" in output, output
