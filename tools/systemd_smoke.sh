#!/usr/bin/env bash
# The shipped unit under a real systemd. It boots systemd in a throwaway container
# (systemd-nspawn, a volatile root with /usr from the host) and checks these steps:
#   `agent service install` (user, state dir, unit, config skeleton; not started without
#   sources/gallery), enroll as user agent, start (Type=notify: READY), `agent status`,
#   a hung agent (SIGSTOP) killed by the watchdog and restarted, reload (SIGHUP), a clean stop
#   (exit 0), and a config error (exit 2), which is not restarted.
# The watchdog and restart delays are shortened by a drop-in, so the run takes about a minute.
#
# Usage, as root: tools/systemd_smoke.sh [AGENT_VENV]   (default /opt/agent)
# Needs systemd-nspawn (Debian: systemd-container) and a venv made from a system Python,
# since ProtectHome=yes hides /root and /home from the service:
#   /usr/bin/python3 -m venv /opt/agent && /opt/agent/bin/pip install -c requirements.lock .
set -euo pipefail
venv=${1:-/opt/agent}
repo=$(cd "$(dirname "$0")/.." && pwd)
tag="agent.smoke=$$"
log=$(mktemp)
systemd-nspawn -q -D / --volatile=yes --register=no --keep-unit -M "agent-smoke-$$" \
    --bind-ro="$venv" --bind-ro="$repo" -b systemd.firstboot=0 "$tag" >"$log" 2>&1 &
nspawn=$!
trap 'kill "$nspawn" 2>/dev/null || true; wait "$nspawn" 2>/dev/null || true; rm -f "$log"' EXIT

leader=""
for _ in $(seq 60); do
    leader=$(pgrep -n -f "systemd systemd.firstboot=0 $tag" || true)
    [ -n "$leader" ] && break
    sleep 1
done
[ -n "$leader" ] || { cat "$log"; echo "container did not boot"; exit 1; }
inside() { nsenter -t "$leader" -a "$@"; }
for _ in $(seq 60); do
    case $(inside systemctl is-system-running 2>/dev/null || true) in running|degraded) break ;; esac
    sleep 1
done

failures=0
check() {  # description, then a command that must succeed
    local what=$1; shift
    if "$@"; then echo "PASS  $what"; else echo "FAIL  $what"; failures=$((failures + 1)); fi
}
prop() { inside systemctl show agent.service -p "$1" --value; }
as_agent() { inside setpriv --reuid agent --regid agent --init-groups --reset-env "$@"; }
agent_as_user() { as_agent "$venv/bin/agent" -c /etc/agent/agent.toml "$@"; }

out=$(inside "$venv/bin/agent" service install --device-id smoke 2>&1)
echo "$out" | sed 's/^/      /'
check "install: not started without sources" grep -q "not started: .*no \[\[sources\]\]" <<<"$out"
check "install: /var/lib/agent owned by agent" \
    sh -c "[ \"\$(nsenter -t $leader -a stat -c %U /var/lib/agent)\" = agent ]"

inside sh -c "cat >> /etc/agent/agent.toml" <<TOML
[metrics]
interval_s = 2.0

[[sources]]
id = "cam"
uri = "$repo/examples/camera.mp4"
loop = true
TOML
check "enroll as user agent (before the first start)" \
    agent_as_user -q enroll "$repo/examples/gallery"
inside mkdir -p /etc/systemd/system/agent.service.d
inside sh -c "printf '[Service]\nWatchdogSec=6s\nRestartSec=1s\n' > /etc/systemd/system/agent.service.d/smoke.conf"
inside systemctl daemon-reload

check "start returns once the agent sent READY" inside systemctl start agent.service
check "active (running), STATUS from sd_notify" \
    sh -c "[ \"\$(nsenter -t $leader -a systemctl show agent -p SubState --value)\" = running ] &&
           nsenter -t $leader -a systemctl show agent -p StatusText --value | grep -q 'running 1 source'"
sleep 6
check "agent status as user agent: running, frames processed" sh -c \
    "nsenter -t $leader -a setpriv --reuid agent --regid agent --init-groups --reset-env \
         $venv/bin/agent -c /etc/agent/agent.toml status --json |
     $venv/bin/python -c 'import json,sys; r=json.load(sys.stdin); assert r[\"running\"] and r[\"metrics\"][\"sources\"][\"cam\"][\"frames_processed\"] > 0'"

first=$(prop MainPID)
[ "$first" != 0 ] && inside kill -STOP "$first"
restarted=""
for _ in $(seq 40); do
    [ "$first" != 0 ] || break
    pid=$(prop MainPID)
    if [ "$(prop NRestarts)" -ge 1 ] && [ "$pid" != "$first" ] && [ "$(prop SubState)" = running ]; then
        restarted=yes
        break
    fi
    sleep 1
done
check "hung agent (SIGSTOP) killed by the watchdog and restarted" [ -n "$restarted" ]
check "journal names the watchdog" sh -c "nsenter -t $leader -a journalctl -u agent --no-pager | grep -qi watchdog"

inside systemctl reload agent.service
sleep 3
check "reload sends SIGHUP: gallery reloaded" \
    sh -c "nsenter -t $leader -a journalctl -u agent --no-pager | grep -q 'SIGHUP: reloading the gallery'"

inside systemctl stop agent.service
check "stop: clean exit 0" sh -c "[ \"\$(nsenter -t $leader -a systemctl show agent -p ExecMainStatus --value)\" = 0 ] &&
    [ \"\$(nsenter -t $leader -a systemctl show agent -p Result --value)\" = success ]"
check "stop: the agent drained and said so" \
    sh -c "nsenter -t $leader -a journalctl -u agent --no-pager | grep -q 'agent stopped'"

inside sh -c "printf 'bogus_key = 1\n' >> /etc/agent/agent.toml"
inside systemctl start agent.service 2>/dev/null || true
sleep 4  # RestartSec is 1 s here: a restart would have happened by now
check "config error: exit 2, unit failed, not restarted" sh -c \
    "[ \"\$(nsenter -t $leader -a systemctl show agent -p ExecMainStatus --value)\" = 2 ] &&
     [ \"\$(nsenter -t $leader -a systemctl show agent -p ActiveState --value)\" = failed ] &&
     [ \"\$(nsenter -t $leader -a systemctl show agent -p NRestarts --value)\" = 0 ]"
check "config error: one line in the journal" \
    sh -c "nsenter -t $leader -a journalctl -u agent --no-pager | grep -q 'error: .*bogus_key'"

echo "--- journal (last 15 lines)"
inside journalctl -u agent --no-pager -n 15 || true
echo "$failures failure(s)"
exit $((failures > 0))
