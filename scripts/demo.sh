#!/usr/bin/env bash
# The newcomer's tour (`make demo`, after `make setup`): start the lab, check the lab's policy set, plan,
# apply (full backups land as ZFS snapshots), let a guest write, plan and apply the incrementals, show
# status — then stop the lab, also when a step fails.
set -euo pipefail

cd "$(dirname "$0")/.."
RECONCILER="${RECONCILER:-.venv/bin/reconciler}"
STATE_DIR="${RECONCILER_LAB_STATE_DIR:-.lab}"
export RECONCILER_LAB_STATE_DIR="$STATE_DIR"
export COLUMNS="${COLUMNS:-120}"  # tables stay readable when the output is not a terminal

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

step "What runs"
echo "\$ reconciler lab status"
"$RECONCILER" lab status

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
echo "\$ zfs list -t snapshot -r $RECONCILER_LAB_DATASET"
zfs list -t snapshot -o name,used,reconciler:kind,reconciler:bytes-read -r "$RECONCILER_LAB_DATASET"

if [ -n "${RECONCILER_DEMO_WATCH:-}" ]; then
  step "Watching: edit a file in policies/ to see a live re-plan; Ctrl-C stops (backups run when due)"
  echo "\$ reconciler watch policies/ --apply safe"
  "$RECONCILER" watch policies/ --apply safe --state-dir "$BACKUP_STATE" --metrics-address off || true
fi

step "Demo complete"
