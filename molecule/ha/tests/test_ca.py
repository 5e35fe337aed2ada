"""A new CA for a replicated group is refused before any host changes: the user moves the CA
out of pki_dir, as the README's single-host rollover says, and deploys. Restarted one at a
time onto the new CA, each server and Sentinel would refuse its peers and the group would
stop, so the run stops at the redis role's start, naming what to put back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import REDIS, REPO, TLS_DIR, WORKER, deploy, healthy, master, on, produce, run_ids

WORKER_CA = "/etc/taskapp/tls/ca.crt"


def fingerprints() -> dict[str, str]:
    """Each host's CA file, by its SHA-256."""
    files = {host: f"{TLS_DIR}/ca.crt" for host in REDIS} | {WORKER: WORKER_CA}
    return {host: on(host).file(path).sha256sum for host, path in files.items()}


def test_a_new_ca_is_refused_before_any_host_changes(tmp_path: Path) -> None:
    # The user's rollover: the CA moved out of pki_dir, the hosts' keys kept. A copy, so the
    # lab's own pki_dir stays as it is.
    pki = tmp_path / "pki"
    shutil.copytree(REPO / "build/pki", pki)
    for name in ("ca.key", "ca.crt", "ca.csr"):
        (pki / name).unlink(missing_ok=True)
    before, servers, first = fingerprints(), run_ids(), master()

    run = deploy("-e", json.dumps({"pki_dir": str(pki)}))

    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    for host in REDIS:
        assert (
            f"redis_tls_source (bundle): the CA this run would install on {host} is not the one "
            "the replicated group's servers and Sentinels trust now"
        ) in out, out[-3000:]
    assert (
        f"Put the earlier CA back ({pki}/ca.crt and its key beside it, where the certificates "
        "step keeps the bundle's CA) and deploy again; no host has been changed"
    ) in " ".join(out.split()), out[-3000:]
    # The certificates step made the new CA on the controller; nothing reached a host.
    assert (pki / "ca.crt").exists()
    assert fingerprints() == before
    assert run_ids() == servers
    assert master() == first
    assert healthy()
    report = produce(5)
    assert report["done"] == 5, report
