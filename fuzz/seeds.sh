#!/usr/bin/env bash
# Writes the fuzz targets' seed corpora to DIR/{decode,differential,requests}/ (default
# fuzz/seeds): small images built by the composefs crate's writer and mkfs.erofs, and a few
# handmade edits of them (fuzz/seeds.rs). Needs mkfs.erofs. Nothing here is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-fuzz/seeds}"
rm -rf "$out"/{decode,differential,requests}
cargo run --quiet --example fuzz_seeds -- "$out"
