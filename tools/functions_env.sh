#!/usr/bin/env bash
# The functions' environment under `make dev`: the given env files concatenated, in the form
# `cargo lambda watch --env-file` reads. Its parser refuses an unquoted value containing `=`
# (a base64 secret's padding, as STANDARD_WEBHOOK_SECRET's), so such values are quoted.
# Usage: tools/functions_env.sh local.env .dev/resources.env > .dev/functions.env
set -euo pipefail
cat "$@" | sed -E '/^[[:space:]]*#/! s/^([A-Za-z_][A-Za-z0-9_]*)=([^"].*=.*)$/\1="\2"/'
