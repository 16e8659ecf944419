#!/usr/bin/env python3
"""The crates histofed only runs at compile time (proc macros, build scripts and what only they use).

Cargo.toml builds them unoptimised (`[profile.dev.package.NAME] opt-level = 0`) because they never run in the
binary. Profile overrides go by name, so a name that is also a run-time dependency (another version of it, or the
same crate) would slow the binary down: `--check` fails on that, and on a listed name that no longer exists.

  scripts/compile_time_crates.py          print the names (for Cargo.toml)
  scripts/compile_time_crates.py --check  compare them with Cargo.toml's opt-level = 0 packages (make lint)
"""
import json
import os
import re
import subprocess
import sys

PLATFORM_ONLY = ("windows", "wasm", "win", "macos", "aarch", "ppcle", "s390", "x86_32", "jni")


def closures():
    meta = json.loads(subprocess.check_output([os.environ.get("CARGO", "cargo"), "metadata", "--format-version", "1"], text=True))
    pk = {p["id"]: p for p in meta["packages"]}
    res = {n["id"]: n for n in meta["resolve"]["nodes"]}
    macros = {p["id"] for p in meta["packages"] if any("proc-macro" in t["kind"] for t in p["targets"])}
    root = next(p["id"] for p in meta["packages"] if p["name"] == "histofed")
    run, stack = set(), [root]
    while stack:
        i = stack.pop()
        if i in run:
            continue
        run.add(i)
        for d in res.get(i, {}).get("deps", []):
            if any(k["kind"] in (None, "dev") for k in d["dep_kinds"]) and d["pkg"] not in macros:
                stack.append(d["pkg"])
    starts = set(macros)
    for i in run:
        for d in res.get(i, {}).get("deps", []):
            if any(k["kind"] == "build" for k in d["dep_kinds"]):
                starts.add(d["pkg"])
    seen, stack = set(), list(starts)
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        stack.extend(d["pkg"] for d in res.get(i, {}).get("deps", []))
    run_names = {pk[i]["name"] for i in run}
    all_names = {p["name"] for p in meta["packages"]}
    compile_only = {pk[i]["name"] for i in seen} - run_names
    return compile_only, run_names, all_names


def main():
    compile_only, run_names, all_names = closures()
    wanted = sorted(n for n in compile_only if not any(s in n for s in PLATFORM_ONLY))
    if "--check" not in sys.argv:
        print("\n".join(wanted))
        return 0
    toml = open("Cargo.toml", encoding="utf-8").read()
    listed = re.findall(r"^\[profile\.dev\.package\.([A-Za-z0-9_-]+)\]\nopt-level = 0$", toml, re.M)
    bad = [n for n in listed if n in run_names]
    gone = [n for n in listed if n not in all_names]
    missing = [n for n in wanted if n not in listed]
    for n in bad:
        print(f"Cargo.toml: {n} is built unoptimised but the binary runs it", file=sys.stderr)
    for n in gone:
        print(f"Cargo.toml: {n} is no longer a dependency", file=sys.stderr)
    if missing:
        print(f"note: compile-time crates still optimised (add them): {' '.join(missing)}", file=sys.stderr)
    return 1 if bad or gone else 0


if __name__ == "__main__":
    sys.exit(main())
