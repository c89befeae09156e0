#!/usr/bin/env bash
# The newcomer's tour (`make demo`, after `make setup`): start the lab, check the lab's policy set, show
# what it declares and what runs, then stop the lab — also when a step fails. Later issues add
# `reconciler plan` and `reconciler apply` here.
set -euo pipefail

cd "$(dirname "$0")/.."
RECONCILER="${RECONCILER:-.venv/bin/reconciler}"
PYTHON="${PYTHON:-.venv/bin/python}"
STATE_DIR="${RECONCILER_LAB_STATE_DIR:-.lab}"
export RECONCILER_LAB_STATE_DIR="$STATE_DIR"

step() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }
fail() { printf '\n\033[1;31mdemo failed: %s\033[0m\n' "$*" >&2; exit 1; }

[ -x "$RECONCILER" ] || fail "$RECONCILER is missing: run \`make setup\` first"

step "Starting the lab: a vCenter and a standalone ESXi (vcsim), a zfs-fuse pool, nbdkit exports"
echo "\$ reconciler lab up"
"$RECONCILER" lab up || fail "the lab did not start (already up? \`reconciler lab down\`)"
# Only now: a lab that was already up before the demo is not ours to stop.
trap 'step "Stopping the lab"; echo "\$ reconciler lab down"; "$RECONCILER" lab down' EXIT

step "Connection settings for tools and policies"
echo "\$ source $STATE_DIR/env"
# shellcheck disable=SC1091
source "$STATE_DIR/env"
sed 's/^export /  /' "$STATE_DIR/env"

step "Validating the lab's policy set"
echo "\$ reconciler validate policies/"
"$RECONCILER" validate policies/

step "Checking that the policy files are in canonical form"
echo "\$ reconciler fmt --check policies/"
"$RECONCILER" fmt --check policies/

step "What the policy set declares"
"$PYTHON" - policies/ <<'EOF'
import sys

from rich.console import Console
from rich.table import Table

from reconciler.policy import load_policies

policies = load_policies(sys.argv[1:])
console = Console()
for title, documents, describe in (
    ("Connections", policies.connections, lambda c: f"{c.address}  user {c.user}"),
    ("Repositories", policies.repositories, lambda r: f"ZFS {r.dataset}  driver {r.driver}"),
    ("Schedules", policies.schedules, lambda s: f"{len(s.rules)} rule(s), {s.timezone}" if not s.cron
     else f"cron {s.cron}, {s.timezone}"),
    ("Retentions", policies.retentions, lambda r: ", ".join(
        f"{k}={v}" for k, v in vars(r).items() if k not in ("name", "location") and v)),
):
    table = Table(title=title, title_justify="left")
    table.add_column("name")
    table.add_column("declares")
    for name, document in documents.items():
        table.add_row(name, describe(document))
    console.print(table)
table = Table(title="Protection policies", title_justify="left")
for column in ("name", "connection → repository", "schedule / retention", "selects", "quiesce"):
    table.add_column(column)
for name, policy in policies.policies.items():
    selects = [f"{k} {', '.join(map(str, v))}" for k, v in vars(policy.select).items() if v and k != "exclude"]
    if policy.select.exclude is not None:
        selects.append("except " + "; ".join(
            f"{k} {', '.join(map(str, v))}" for k, v in vars(policy.select.exclude).items() if v and k != "exclude"))
    table.add_row(name + (" (paused)" if policy.paused else ""),
                  f"{policy.connection} → {policy.repository}",
                  f"{policy.schedule} / {policy.retention}", "\n".join(selects), str(policy.quiesce))
console.print(table)
EOF

step "What runs"
echo "\$ reconciler lab status"
"$RECONCILER" lab status

step "Reading VM disks over NBD, as a backup will (nbdkit curl plugin -> libnbd)"
"$PYTHON" - "$STATE_DIR/lab.json" <<'EOF'
import json
import sys

from reconciler.adapters.nbd.client import NbdClient

state = json.load(open(sys.argv[1]))
for export in state["exports"][:2]:
    with NbdClient.open(export["uri"]) as disk:
        header = disk.pread(512, 8)  # LBA 1: a GPT header starts with "EFI PART"
        table = "a GPT partition table" if header == b"EFI PART" else "no GPT"
        print(f"{export['name']}: {export['uri']}")
        print(f"  {disk.size / 2**30:.0f} GiB, read-only: {disk.read_only}, LBA 1 starts {header!r}: {table}")
EOF

# -- backups (issue 5): plan → apply → a guest write → an incremental → status ---------------------------
BACKUP_STATE="$STATE_DIR/state"  # the journal of this demo's runs
LATER="$(date -u -d '+5 hours' +%Y-%m-%dT%H:%M:%SZ)"  # the lab's schedule is 4-hourly at night: be due

step "What apply would do"
echo "\$ reconciler plan policies/"
"$RECONCILER" plan policies/ --state-dir "$BACKUP_STATE"

step "Applying: pair the VMs, enable CBT, full backups (each lands as a ZFS snapshot)"
echo "\$ reconciler apply policies/ --auto-approve"
"$RECONCILER" apply policies/ --auto-approve --state-dir "$BACKUP_STATE" || fail "apply failed"
zfs list -t snapshot -o name,used,reconciler:kind -r "$RECONCILER_LAB_DATASET"

step "The guest of web-01 writes 1 MiB (CBT records the change)"
echo "\$ reconciler lab write web-01 2000 --offset 104857600 --length 1048576 --random"
"$RECONCILER" lab write web-01 2000 --offset 104857600 --length 1048576 --random

step "Five hours later the plan shows incrementals"
echo "\$ reconciler plan policies/ --at $LATER"
"$RECONCILER" plan policies/ --state-dir "$BACKUP_STATE" --at "$LATER"

step "Applying: only the changed MiB is read"
echo "\$ reconciler apply policies/ --auto-approve --at $LATER"
"$RECONCILER" apply policies/ --auto-approve --state-dir "$BACKUP_STATE" --at "$LATER" || fail "apply failed"

step "Status: last backup, age, chain length, next due"
echo "\$ reconciler status policies/"
"$RECONCILER" status policies/ --state-dir "$BACKUP_STATE"

step "Demo complete"
