#!/usr/bin/env bash
# L4 (TCP) benchmark: see run.sh.
MODE=tcp exec "$(dirname "$0")/run.sh" "$@"
