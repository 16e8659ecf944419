#!/usr/bin/env bash
# Fails when `cargo build` (normal dependencies) and `cargo test` (plus dev-dependencies) would compile a
# shared crate with different features. Cargo's resolver 2 adds the features dev-dependencies ask for only to the
# test build, and every crate whose features differ — with everything that depends on it — is compiled twice: once
# for `make test`, again for `make build`/`make demo`. Cargo.toml requests those features for the binary too; this
# check (part of `make lint`) keeps the two in step when a dependency changes. Crates only the tests use are fine.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo=${CARGO:-cargo}

resolve() {
  "$cargo" tree --locked -e "$1" -f '{p} [{f}]' --prefix none | sed 's/ (\*)$//' | sort -u
}
build=$(resolve normal)
test=$(resolve normal,dev)

# "name vX.Y.Z [features]" lines of one resolution that the other lacks, for crates both resolutions contain.
drift=$(awk '
  FNR == 1 { file++ }
  { key = $1 " " $2; seen[file, key] = 1; line[file, $0] = 1; lines[file] = lines[file] "\n" $0 }
  END {
    for (f = 1; f <= 2; f++) {
      n = split(lines[f], ls, "\n")
      for (i = 1; i <= n; i++) {
        if (ls[i] == "") continue
        split(ls[i], w, " "); key = w[1] " " w[2]; o = 3 - f
        if (seen[o, key] && !line[o, ls[i]]) print (f == 1 ? "build: " : "test:  ") ls[i]
      }
    }
  }' <(echo "$build") <(echo "$test"))

if [ -n "$drift" ]; then
  echo "error: cargo build and cargo test resolve different features for crates they share:" >&2
  echo "$drift" >&2
  echo "request the test build's features in [dependencies] (Cargo.toml explains why)" >&2
  exit 1
fi
echo "check-features: cargo build and cargo test resolve the same features for every shared crate"
