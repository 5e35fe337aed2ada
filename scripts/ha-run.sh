#!/usr/bin/env bash
# scripts/ha-run.sh MARK: the ha Molecule scenario's tests marked MARK (molecule/ha/tests:
# `experiment` for make chaos-ha, `bench` for make bench-ha) on hosts Molecule created and
# did not converge (the tests deploy them themselves). The hosts are destroyed at the end,
# whatever the tests did; the exit code is the tests'.
set -euo pipefail
mark=${1:?usage: scripts/ha-run.sh experiment|bench}
molecule destroy -s ha
molecule create -s ha
rc=0
HA_TESTS=$mark molecule verify -s ha || rc=$?
molecule destroy -s ha
exit "$rc"
