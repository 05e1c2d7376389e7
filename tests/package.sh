#!/usr/bin/env bash
# The Debian package, tested the way an admin uses it, on this machine, as root: build it with
# `cargo deb`, install it (no systemd needs to run), check its files, owners and modes and the
# unit's exposure score, edit /etc/vmdeck/vmdeck.toml, create an admin with the CLI, run the
# server exactly as the installed unit says (user, environment, working directory), log in over
# HTTP and list the VMs, then purge and check that nothing is left but the system user.
#
# Touches only loopback and libvirt's in-process test driver. Cleans up on any exit (the
# package purged, a libvirt group or vmdeck user it created removed), so it runs again.
# Needs: root, cargo-deb (scripts/setup.sh --test installs it), adduser, curl, systemd-analyze.
set -euo pipefail
cd "$(dirname "$0")/.."

UNIT=/usr/lib/systemd/system/vmdeck.service
CONFIG=/etc/vmdeck/vmdeck.toml
SECRET=/etc/vmdeck/secret.env
STATE=/var/lib/vmdeck
BIN=/usr/bin/vmdeck
# The one domain of libvirt's built-in test driver (test:///default).
TEST_VM_UUID=6695eb01-f6a4-8304-79aa-97f2502e193f

fail() {
  echo "package.sh: FAILED: $*" >&2
  exit 1
}
step() { echo "package.sh: $*"; }
# (Pipes into `grep -q` are avoided here: grep stops reading at the first match, and under
# pipefail the writer's broken pipe would fail the check.)
package_present() {
  local status
  status="$(dpkg-query -W -f='${Status}' vmdeck 2>/dev/null || true)"
  # Anything but unknown or purged ("... not-installed") is on the machine, if only its files.
  [ -n "$status" ] && [[ "$status" != *" not-installed" ]]
}

[ "$(id -u)" -eq 0 ] || fail "run as root: it installs and purges the package"
for tool in cargo curl adduser systemd-analyze setpriv dpkg-deb; do
  command -v "$tool" >/dev/null || fail "$tool is missing (scripts/setup.sh --test installs what is needed)"
done
cargo deb --version >/dev/null 2>&1 || fail "cargo-deb is missing: scripts/setup.sh --test installs it"
if package_present; then
  fail "a vmdeck package is installed here; this test installs and purges its own: dpkg --purge vmdeck first"
fi

work="$(mktemp -d)"
server_pid=""
created_group=0
created_user=0
cleanup() {
  local status=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -f "$work/server.log" ]; then
    echo "package.sh: the server's log:" >&2
    tail -n 40 "$work/server.log" >&2
  fi
  if package_present; then
    dpkg --purge vmdeck >/dev/null 2>&1 || echo "package.sh: could not purge vmdeck" >&2
  fi
  # Leave the machine as it was: the account the package keeps on purge goes if this run made it.
  if [ "$created_user" = 1 ] && getent passwd vmdeck >/dev/null; then
    deluser --quiet --system vmdeck >/dev/null 2>&1 || userdel vmdeck || true
    getent group vmdeck >/dev/null && { groupdel vmdeck || true; }
  fi
  if [ "$created_group" = 1 ] && getent group libvirt >/dev/null; then
    groupdel libvirt || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

# A machine with libvirt-daemon-system has the libvirt group; stand one in if not, so that the
# postinst's "join libvirt" path is always exercised.
if ! getent group libvirt >/dev/null; then
  groupadd --system libvirt
  created_group=1
fi
getent passwd vmdeck >/dev/null || created_user=1

step "building the package (cargo deb)"
started=$SECONDS
deb_out="$(cargo deb --locked 2>"$work/cargo-deb.log")" \
  || { cat "$work/cargo-deb.log" >&2; fail "cargo deb"; }
deb="$(echo "$deb_out" | tail -n 1)"
[ -f "$deb" ] || fail "cargo deb printed no package path (got: $deb_out)"
step "built $deb in $((SECONDS - started)) s"
dpkg-deb --field "$deb" Package Version Depends

step "installing it (dpkg -i)"
dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i"; }

# owner:group mode of a path.
perms() { stat -c '%U:%G %a' "$1"; }
expect_perms() {
  local got
  got="$(perms "$1")"
  [ "$got" = "$2" ] || fail "$1 is $got, expected $2"
}
step "checking files, owners and modes"
expect_perms "$BIN" "root:root 755"
expect_perms "$UNIT" "root:root 644"
expect_perms "$CONFIG" "root:vmdeck 640"
expect_perms "$SECRET" "root:root 600"
expect_perms "$STATE" "vmdeck:vmdeck 700"
grep -q '^/etc/vmdeck/vmdeck.toml$' /var/lib/dpkg/info/vmdeck.conffiles || fail "vmdeck.toml is not a conffile"
grep -Eq '^ROCKET_SECRET_KEY=[A-Za-z0-9+/]{43}=$' "$SECRET" || fail "$SECRET holds no 32-byte base64 key"
[ "$(getent passwd vmdeck | cut -d: -f6)" = "$STATE" ] || fail "vmdeck's home is not $STATE"
[[ " $(id -nG vmdeck) " == *" libvirt "* ]] || fail "vmdeck is not in the libvirt group"
[ -L /etc/systemd/system/multi-user.target.wants/vmdeck.service ] || fail "the unit was not enabled"
for key in "ExecStart=/usr/bin/vmdeck serve" "User=vmdeck" "Environment=ROCKET_CONFIG=$CONFIG" \
  "EnvironmentFile=$SECRET" "StateDirectory=vmdeck" "WorkingDirectory=$STATE"; do
  grep -qx "$key" "$UNIT" || fail "the unit lacks $key"
done

step "checking the unit's exposure (systemd-analyze security --offline=true $UNIT)"
systemd-analyze security --offline=true "$UNIT" >"$work/security.txt" 2>&1 || true
score_line="$(grep 'Overall exposure level' "$work/security.txt" || true)"
[ -n "$score_line" ] || { cat "$work/security.txt" >&2; fail "systemd-analyze printed no score"; }
echo "  $score_line"
[[ "$score_line" =~ :\ [0-9.]+\ (OK|SAFE|PERFECT) ]] || fail "exposure worse than OK: $score_line"

step "checking the packaged configuration (vmdeck check-config)"
# The CLI must find the installed file with no environment set.
env -u ROCKET_CONFIG -u ROCKET_SECRET_KEY "$BIN" check-config >"$work/check.out" 2>"$work/check.err" || true
grep -qx "configuration file: $CONFIG (profile release)" "$work/check.out" \
  || { cat "$work/check.out" "$work/check.err" >&2; fail "check-config did not read $CONFIG"; }
grep -qx 'demo = false' "$work/check.out" || fail "the packaged configuration runs the demo"
# The key is not in the configuration: check-config checks the one the unit gives the service.
grep -qx "secret_key = (in $SECRET, hidden)" "$work/check.out" || fail "check-config did not find the key in $SECRET"
# The default host (the local libvirt) may or may not answer here; anything else is an error.
if grep -qv '^vmdeck: hosts\[local\]: cannot take an inventory' "$work/check.err"; then
  cat "$work/check.err" >&2
  fail "check-config found problems in the packaged configuration"
fi

step "editing $CONFIG as an admin would: the test driver for the local host, a free port"
port=""
for candidate in $(seq 18300 18399); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
    port=$candidate
    break
  fi
done
[ -n "$port" ] || fail "no free port in 18300-18399"
sed -i -e 's|^uri = "qemu:///system"$|uri = "test:///default"|' -e "s|^port = 8000\$|port = $port|" "$CONFIG"
for edited in 'uri = "test:///default"' "port = $port"; do
  grep -qx "$edited" "$CONFIG" || fail "the packaged configuration no longer has the line this test edits into: $edited"
done
env -u ROCKET_CONFIG "$BIN" check-config >"$work/check.out" 2>&1 || { cat "$work/check.out" >&2; fail "check-config"; }
grep -q 'local  test:///default  ok: 1 VMs' "$work/check.out" || { cat "$work/check.out" >&2; fail "check-config did not reach the test host"; }
# The service's user reads the configuration (group vmdeck) but not the key.
runuser -u vmdeck -- env -u ROCKET_CONFIG "$BIN" check-config >"$work/check.out" 2>&1 \
  || { cat "$work/check.out" >&2; fail "check-config as vmdeck"; }
grep -qx "secret_key = (in $SECRET, not readable by this user)" "$work/check.out" \
  || { cat "$work/check.out" >&2; fail "check-config as vmdeck did not say the key is out of its reach"; }

step "reinstalling (the upgrade path): the key and the admin's edits are kept"
key_before="$(cat "$SECRET")"
dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i (again)"; }
[ "$(cat "$SECRET")" = "$key_before" ] || fail "the upgrade replaced $SECRET"
grep -qx "port = $port" "$CONFIG" || fail "the upgrade lost the admin's edit of $CONFIG"
expect_perms "$CONFIG" "root:vmdeck 640"

step "creating the first admin as root with the CLI, before the service ever ran"
password="pkg-test-$(head -c 12 /dev/urandom | base64 | tr -d '/+=')"
echo "$password" | env -u ROCKET_CONFIG "$BIN" user add ops --role admin >/dev/null
# Root created the database: it must still be the service's.
expect_perms "$STATE/vmdeck.db" "vmdeck:vmdeck 600"
left="$(find "$STATE" ! -user vmdeck)"
[ -z "$left" ] || fail "files under $STATE not owned by vmdeck after the CLI ran as root: $left"

step "starting the server as the unit does"
# What the unit sets, read from the installed unit, not repeated here.
unit_value() { sed -n "s/^$1=//p" "$UNIT" | tail -n 1; }
user="$(unit_value User)"
workdir="$(unit_value WorkingDirectory)"
umask_value="$(unit_value UMask)"
read -r -a exec_start <<<"$(unit_value ExecStart)"
env_vars=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  "HOME=$(getent passwd "$user" | cut -d: -f6)" "USER=$user" "LOGNAME=$user")
while read -r -a unit_env; do
  env_vars+=("${unit_env[@]}")
done < <(sed -n 's/^Environment=//p' "$UNIT")
while IFS= read -r line; do
  case "$line" in '#'* | '') ;; *=*) env_vars+=("$line") ;; esac
done <"$(unit_value EnvironmentFile)"
(
  cd "$workdir"
  umask "$umask_value"
  exec setpriv --reuid="$user" --regid="$user" --init-groups --no-new-privs \
    env -i "${env_vars[@]}" "${exec_start[@]}"
) >"$work/server.log" 2>&1 &
server_pid=$!

base="http://127.0.0.1:$port"
# Polls until the command succeeds or the time runs out (the server must stay up meanwhile).
wait_for() {
  local what="$1" limit="$2"
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    kill -0 "$server_pid" 2>/dev/null || fail "the server exited while waiting for $what"
    [ "$SECONDS" -lt "$deadline" ] || fail "no $what within $limit s"
    sleep 0.2
  done
}
healthz_ok() { curl -fsS -o "$work/healthz.json" "$base/healthz" 2>/dev/null && grep -q '^{"status":"ok"' "$work/healthz.json"; }
wait_for "healthy /healthz" 60 healthz_ok

step "using the CLI as root while the server runs"
echo "$password-2" | env -u ROCKET_CONFIG "$BIN" user add viewer1 --role viewer >/dev/null
env -u ROCKET_CONFIG "$BIN" user list >"$work/users.txt"
grep -q '^ops ' "$work/users.txt" || fail "user list does not show ops"
left="$(find "$STATE" ! -user vmdeck)"
[ -z "$left" ] || fail "files under $STATE not owned by vmdeck after the CLI ran as root: $left"

step "logging in over HTTP and listing the VMs"
jar="$work/cookies"
status="$(curl -sS -o /dev/null -w '%{http_code}' -c "$jar" -b "$jar" -H "Origin: $base" \
  --data-urlencode username=ops --data-urlencode "password=$password" "$base/login")"
[ "$status" = 303 ] || fail "login answered $status, expected 303"
vms_list_test_vm() {
  curl -fsS -b "$jar" "$base/vms" >"$work/vms.html" 2>/dev/null && grep -q "$TEST_VM_UUID" "$work/vms.html"
}
wait_for "test VM on /vms" 60 vms_list_test_vm
curl -fsS -b "$jar" -o "$work/healthz.json" "$base/healthz"
grep -q '"local"' "$work/healthz.json" || fail "/healthz does not name the local host to a logged-in user"

step "stopping the server"
kill "$server_pid"
wait "$server_pid" || true
server_pid=""
if [ -n "${VMDECK_TEST_OUTPUT:-}" ]; then
  mkdir -p "$VMDECK_TEST_OUTPUT"
  cp "$work/server.log" "$VMDECK_TEST_OUTPUT/package-server.log"
fi
if grep -E 'ERROR|panicked' "$work/server.log"; then
  fail "the server logged errors"
fi
# The unit's NO_COLOR reached it: plain lines for the journal.
if grep -q $'\e\[' "$work/server.log"; then
  fail "the server's log has terminal colour codes"
fi
left="$(find "$STATE" ! -user vmdeck)"
[ -z "$left" ] || fail "files under $STATE not owned by vmdeck: $left"

step "purging (dpkg --purge vmdeck)"
dpkg --purge vmdeck >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg --purge"; }
for gone in "$BIN" "$UNIT" /etc/vmdeck "$STATE" /etc/systemd/system/multi-user.target.wants/vmdeck.service \
  /var/lib/systemd/deb-systemd-helper-enabled/vmdeck.service.dsh-also /usr/share/doc/vmdeck; do
  [ ! -e "$gone" ] || fail "$gone is left after purge"
done
# Debian keeps system accounts on purge (files elsewhere may still carry the uid).
getent passwd vmdeck >/dev/null || fail "the vmdeck system user was removed on purge"

step "installing again over the kept account, and purging again"
uid="$(id -u vmdeck)"
dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i after purge"; }
[ "$(id -u vmdeck)" = "$uid" ] || fail "the reinstallation made a new vmdeck account"
expect_perms "$STATE" "vmdeck:vmdeck 700"
expect_perms "$SECRET" "root:root 600"
[ "$(cat "$SECRET")" != "$key_before" ] || fail "the purged key came back"
dpkg --purge vmdeck >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg --purge (again)"; }
if [ -e /etc/vmdeck ] || [ -e "$STATE" ]; then fail "the second purge left /etc/vmdeck or $STATE"; fi

echo "package.sh: 1 passed, 0 failed"
