#!/usr/bin/env bash
# CHAP and read-only snapshot targets.
#
# Snapshot targets refuse writes (before any CHAP is set): on iqn.2026-11.org.strata:vm1:s1,
# tests/iscsi/iscsi_raw.py write-protect sees the WP bit in MODE SENSE(6) and CHECK CONDITION,
# DATA PROTECT, WRITE PROTECTED (7/0x27) for WRITE(10) and WRITE(16), with the data unchanged;
# qemu-io refuses to open the snapshot read-write; libiscsi's ReadOnly.ReadOnlySBC test (every
# write-type command must fail with DATA PROTECT) must pass, skipping only WRITE ATOMIC(16),
# which Strata does not implement (ORWRITE is implemented, so its check must run).
#
# CHAP, set with `strata iscsi chap set` on the running daemon:
#  - per target: vm1 gets user alice; iscsi-inq logs in with the right secret, is refused with
#    the wrong one (libiscsi reports status 0x0201, "Authentication failure") and without one;
#    vm2, which has no CHAP, still logs in without a secret;
#  - mutual: vm1 gets a mutual user and secret as well; libiscsi 1.19 takes the target's
#    credentials as URL arguments (?target_user=U&target_password=S) or environment variables
#    (LIBISCSI_CHAP_TARGET_USERNAME/PASSWORD); both forms log in with the right target secret,
#    and the initiator refuses the target with a wrong one ("Invalid CHAP_R response from the
#    target"), as it does when it asks a target without a mutual secret to prove itself;
#  - for every target (no VOLUME): vm2 now needs bob's secret;
#  - `strata iscsi chap list [--json]` names both entries (valid JSON) and never prints a
#    secret; after `chap remove` of both, vm1 and vm2 log in without a secret again.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/iscsi-lib.sh"
requires iscsi-inq iscsi-test-cu qemu-io stdbuf "$PYTHON"
qemu_has_iscsi || requires "qemu-block-extra(qemu-img iscsi:// support)"

start_daemon
wait_iscsi
strata volume create vm1 --size 16M >/dev/null
strata volume create vm2 --size 16M >/dev/null
qemu-io -f raw -c "write -P 0x42 0 1M" "$URI/vm1" >/dev/null || fail "write vm1 over NBD"
strata snapshot create vm1@s1 >/dev/null

# --- read-only snapshot target --------------------------------------------------------------
"$PYTHON" "$ISCSI_DIR/iscsi_raw.py" write-protect --portal "$ISCSI_PORTAL" --target "$IQN:vm1:s1" ||
    fail "the snapshot target does not refuse writes with DATA PROTECT (see above)"
expect_fail "qemu-io refuses to open the snapshot read-write" qemu-io -f raw -c "write -P 0x55 0 4k" "$(iscsi_url vm1:s1)"
grep -qi "write protected" "$WORKDIR/out" || fail "qemu-io: want 'write protected': $(cat "$WORKDIR/out")"
expect_ok "the snapshot still reads 0x42" qemu-io -r -f raw -c "read -P 0x42 0 1M" "$(iscsi_url vm1:s1)"
# ReadOnlySBC sends every write-type command and wants DATA PROTECT for each. It marks a command
# the target does not implement [SKIPPED] and goes on; only WRITE ATOMIC(16), which Strata does
# not implement, may be skipped, and the whole test must not be skipped (as it is when the LU
# does not report itself write-protected).
set +e
stdbuf -oL iscsi-test-cu --dataloss --test=ALL.ReadOnly "$(iscsi_url vm1:s1)" 2>&1 |
    "$PYTHON" "$ISCSI_DIR/cu_report.py" --log "$WORKDIR/ro.log" --results "$WORKDIR/ro.tsv" --label "ReadOnly suite vs vm1@s1"
set -e
grep -qx $'ALL.ReadOnly.ReadOnlySBC\t\(pass\|skip\)\t.*' "$WORKDIR/ro.tsv" ||
    fail "iscsi-test-cu ALL.ReadOnly.ReadOnlySBC did not pass on the snapshot target: $(cat "$WORKDIR/ro.tsv")"
skips=$(grep -o '\[SKIPPED\].*' "$WORKDIR/ro.log" | grep -Ev '^\[SKIPPED\] WRITEATOMIC16 is not implemented\.$' || true)
[ -z "$skips" ] || fail "ReadOnlySBC skipped checks of commands Strata must refuse on a snapshot: $skips"
echo "ok: ReadOnly.ReadOnlySBC passed on the snapshot target$(grep -q '\[SKIPPED\]' "$WORKDIR/ro.log" && echo " (WRITE ATOMIC(16) not implemented, skipped)")"
expect_ok "the snapshot still reads 0x42 after the ReadOnly suite" qemu-io -r -f raw -c "read -P 0x42 0 1M" "$(iscsi_url vm1:s1)"

# --- CHAP, one target ------------------------------------------------------------------------
expect_ok "vm1 logs in without a secret before CHAP is set" iscsi-inq "$(iscsi_url vm1)"
strata iscsi chap set vm1 --user alice --secret alicesecret12 >/dev/null || fail "chap set vm1"
expect_ok "vm1 with alice's secret" iscsi-inq "$(iscsi_url vm1 alice%alicesecret12)"
expect_fail "vm1 with a wrong secret" iscsi-inq "$(iscsi_url vm1 alice%wrongsecret12)"
grep -q "Authentication failure" "$WORKDIR/out" || fail "wrong secret: want libiscsi's 'Authentication failure' (0x0201): $(cat "$WORKDIR/out")"
expect_fail "vm1 with an unknown user" iscsi-inq "$(iscsi_url vm1 mallory%alicesecret12)"
expect_fail "vm1 without a secret" iscsi-inq "$(iscsi_url vm1)"
expect_ok "vm2 (no CHAP) without a secret" iscsi-inq "$(iscsi_url vm2)"
expect_ok "qemu-io reads vm1 with alice's secret" qemu-io -r -f raw -c "read -P 0x42 0 1M" "$(iscsi_url vm1 alice%alicesecret12)"
expect_fail "qemu-io without a secret" qemu-io -r -f raw -c "read 0 4k" "$(iscsi_url vm1)"

# --- mutual CHAP ------------------------------------------------------------------------------
# Before the target has a mutual secret, an initiator that asks it to prove itself must fail.
expect_fail "mutual CHAP asked of a target without a mutual secret" \
    iscsi-inq "$(iscsi_url vm1 alice%alicesecret12)?target_user=strata&target_password=targetsecret12"
strata iscsi chap set vm1 --user alice --secret alicesecret12 --mutual-user strata --mutual-secret targetsecret12 >/dev/null ||
    fail "chap set vm1 with a mutual secret"
expect_ok "mutual CHAP, target credentials in the URL" \
    iscsi-inq "$(iscsi_url vm1 alice%alicesecret12)?target_user=strata&target_password=targetsecret12"
expect_ok "mutual CHAP, target credentials in the environment" \
    env LIBISCSI_CHAP_TARGET_USERNAME=strata LIBISCSI_CHAP_TARGET_PASSWORD=targetsecret12 iscsi-inq "$(iscsi_url vm1 alice%alicesecret12)"
expect_fail "mutual CHAP with a wrong target secret (URL)" \
    iscsi-inq "$(iscsi_url vm1 alice%alicesecret12)?target_user=strata&target_password=wrongtarget12"
grep -q "Invalid CHAP_R response from the target" "$WORKDIR/out" ||
    fail "wrong target secret: want the initiator to reject the target's CHAP_R: $(cat "$WORKDIR/out")"
expect_fail "mutual CHAP with a wrong target secret (environment)" \
    env LIBISCSI_CHAP_TARGET_USERNAME=strata LIBISCSI_CHAP_TARGET_PASSWORD=wrongtarget12 iscsi-inq "$(iscsi_url vm1 alice%alicesecret12)"
grep -q "Invalid CHAP_R response from the target" "$WORKDIR/out" ||
    fail "wrong target secret: want the initiator to reject the target's CHAP_R: $(cat "$WORKDIR/out")"
expect_fail "mutual CHAP with a wrong initiator secret" \
    iscsi-inq "$(iscsi_url vm1 alice%wrongsecret12)?target_user=strata&target_password=targetsecret12"
grep -q "Authentication failure" "$WORKDIR/out" || fail "want 'Authentication failure': $(cat "$WORKDIR/out")"

# --- CHAP for every target --------------------------------------------------------------------
strata iscsi chap set --user bob --secret bobsecret1234 >/dev/null || fail "chap set (every target)"
expect_ok "vm2 with bob's secret" iscsi-inq "$(iscsi_url vm2 bob%bobsecret1234)"
expect_fail "vm2 without a secret" iscsi-inq "$(iscsi_url vm2)"
expect_fail "vm2 with a wrong secret" iscsi-inq "$(iscsi_url vm2 bob%wrongsecret123)"

strata iscsi chap list --json >"$WORKDIR/chap.json" || fail "chap list --json"
"$PYTHON" - "$WORKDIR/chap.json" <<'PY' || fail "chap list --json: $(cat "$WORKDIR/chap.json")"
import json, sys
text = open(sys.argv[1]).read()
json.loads(text)
for word in ("vm1", "alice", "bob"):
    assert word in text, "chap list --json does not mention %s" % word
PY
echo "ok: chap list --json names vm1/alice and bob"
strata iscsi chap list >"$WORKDIR/chap.txt" || fail "chap list"
cat "$WORKDIR/chap.txt"
grep -q vm1 "$WORKDIR/chap.txt" || fail "chap list does not name vm1"
for secret in alicesecret12 targetsecret12 bobsecret1234; do
    ! grep -q "$secret" "$WORKDIR/chap.json" "$WORKDIR/chap.txt" || fail "chap list prints the secret $secret"
done
echo "ok: chap list names the targets and users, never the secrets"

strata iscsi chap remove >/dev/null || fail "chap remove (every target)"
strata iscsi chap remove vm1 >/dev/null || fail "chap remove vm1"
expect_ok "vm1 without a secret after chap remove" iscsi-inq "$(iscsi_url vm1)"
expect_ok "vm2 without a secret after chap remove" iscsi-inq "$(iscsi_url vm2)"

stop_daemon
strata check >/dev/null || fail "strata check"
echo "PASS $TEST_NAME"
