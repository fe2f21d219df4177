#!/usr/bin/env bash
# VRRP failover figures: crash of the MASTER (SIGKILL + its link down) → VIP on the BACKUP and
# → the client served by it, for ballast↔ballast, ballast↔keepalived (both ways) and
# keepalived↔keepalived, at advert_int 1 s (VRRPv2, PASS) and 0.1 s (VRRPv3), all measured by the
# same script: ../shared/netlab/failover-time.sh with ballast slotted in through MASTER_CMD /
# BACKUP_CMD (bench/vrrp-node.sh). MASTER priority 100, BACKUP 90.
#
#   bench/vrrp-failover.sh [TRIALS]      (default 3; root, keepalived, python3, iproute2, curl)
#
# Env: ADVERTS ("1 0.1"), PAIRS ("bb bk kb kk": first letter the MASTER, b = ballast,
# k = keepalived), NETLAB (../shared/netlab), NETLAB_PREFIX (bvf, so a lab of another user of
# the default prefix is left alone). Builds ballast --release first.
set -euo pipefail
trials="${1:-3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
netlab="${NETLAB:-$root/../shared/netlab}"
[[ -x "$netlab/failover-time.sh" ]] || { echo "no netlab at $netlab" >&2; exit 1; }
export NETLAB_PREFIX="${NETLAB_PREFIX:-bvf}"
(cd "$root" && cargo build --release --quiet)
node="$root/bench/vrrp-node.sh {IF} {VRID} {PRIO} {VIP}/{PLEN} {ADVERT} {VERSION} '{AUTH_PASS}' {DIR}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
name() { case $1 in b) echo ballast ;; k) echo keepalived ;; esac; }
for advert in ${ADVERTS:-1 0.1}; do
    for pair in ${PAIRS:-bb bk kb kk}; do
        m=${pair:0:1} b=${pair:1:1}
        env=()
        [[ $m == b ]] && env+=("MASTER_CMD=$node")
        [[ $b == b ]] && env+=("BACKUP_CMD=$node")
        echo "== advert $advert s: $(name "$m") MASTER, $(name "$b") BACKUP" >&2
        env "${env[@]}" VRRP_ADVERT_INT="$advert" "$netlab/failover-time.sh" "$trials" \
            >"$out/$advert-$pair.txt" 2>&1 || { cat "$out/$advert-$pair.txt" >&2; exit 1; }
        grep -E '^ *[0-9]+ ' "$out/$advert-$pair.txt" >&2 || true
    done
done
echo
printf '| advert / version | MASTER → BACKUP | trials | crash → backup holds VIP (min / median / max) | crash → client served | master down on the wire | restart → preempted back |\n'
printf '|---|---|---|---|---|---|---|\n'
for advert in ${ADVERTS:-1 0.1}; do
    v=2; awk -v a="$advert" 'BEGIN{exit !(a < 1)}' && v=3
    for pair in ${PAIRS:-bb bk kb kk}; do
        f="$out/$advert-$pair.txt"
        get() { awk -v k="$1" '$1=="RESULT" && $4==k {split($5,a,"="); split($6,b,"="); split($7,c,"="); printf "%s / %s / %s", a[2], b[2], c[2]}' "$f"; }
        printf '| %s s / v%s | %s → %s | %s | %s | %s | %s | %s |\n' "$advert" "$v" \
            "$(name "${pair:0:1}")" "$(name "${pair:1:1}")" "$trials" \
            "$(get failover_vip_s)" "$(get failover_client_s)" "$(get failover_master_down_on_wire_s)" "$(get preempt_master_vip_s)"
    done
done
