#!/bin/sh
# Runs the whole end-to-end benchmark (needs root). Options go to lazycfs-bench, e.g.:
#   bench/run.sh --quick                 # smoke test, a few minutes
#   bench/run.sh --out bench/results     # full run
#   bench/run.sh --headline              # the top-level README's table, in bench/headline/
set -eu
cd "$(dirname "$0")/.."
exec cargo run --release --manifest-path bench/Cargo.toml -- "$@"
