#!/usr/bin/env bash
# L7 (HTTP) benchmark: see run.sh.
MODE=http exec "$(dirname "$0")/run.sh" "$@"
