#!/usr/bin/env bash
# One ballast VRRP node for ../shared/netlab (keepalived-pair.sh / failover-time.sh MASTER_CMD or
# BACKUP_CMD): writes a ballast config equivalent to the keepalived.conf the lab generates and
# runs ballast in the foreground (exec, so the lab's SIGKILL/SIGTERM reach ballast itself).
#
#   vrrp-node.sh IF VRID PRIO VIP/PLEN ADVERT VERSION AUTH_PASS DIR
#
# e.g. MASTER_CMD="$PWD/bench/vrrp-node.sh {IF} {VRID} {PRIO} {VIP}/{PLEN} {ADVERT} {VERSION} '{AUTH_PASS}' {DIR}"
# BALLAST (default: target/release/ballast next to this script) picks the binary.
set -euo pipefail
[[ $# -eq 8 ]] || { sed -n '2,10p' "$0" >&2; exit 2; }
ifname=$1 vrid=$2 prio=$3 vip=$4 advert=$5 version=$6 pass=$7 dir=$8
here="$(cd "$(dirname "$0")" && pwd)"
ballast="${BALLAST:-$here/../target/release/ballast}"
ms=$(awk -v a="$advert" 'BEGIN{printf "%d", a*1000 + 0.5}')
mkdir -p "$dir"
conf="$dir/ballast.toml"
{
    printf '[global]\nthreads = 1\nlog_level = "info"\n\n'
    printf '[vrrp]\n[[vrrp.instance]]\nname = "VI_%s"\ninterface = "%s"\nvirtual_router_id = %s\n' "$vrid" "$ifname" "$vrid"
    printf 'priority = %s\nadvert_int = "%sms"\nversion = %s\nvirtual_ipaddress = ["%s"]\n' "$prio" "$ms" "$version" "$vip"
    if [[ "$version" == 2 && -n "$pass" ]]; then
        printf 'authentication = { auth_type = "PASS", auth_pass = "%s" }\n' "$pass"
    fi
} >"$conf"
exec "$ballast" run -c "$conf"
