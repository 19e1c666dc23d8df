#!/usr/bin/env python3
"""The layer rule of docs/architecture.md: a layer includes only layers below it.

Layers, lowest first: core, backend, autograd, ops, dist, nn, moe, init, data, io, train. The
CUDA backend in kernels/ belongs to backend. Every `#include "upcycle/<layer>/..."` in
include/upcycle/<layer>/, src/<layer>/ and kernels/ is checked; an include of a higher layer
(or of the same-rank layer cycle it would make) fails with the file, the line and the edge.
Usage: check_layers.py PROJECT_ROOT
"""
import os
import re
import sys

ORDER = ["core", "backend", "autograd", "ops", "dist", "nn", "moe", "init", "data", "io", "train"]
RANK = {name: i for i, name in enumerate(ORDER)}
INCLUDE = re.compile(r'^\s*#\s*include\s+"upcycle/(\w+)/')


def files_of(root, layer):
    dirs = [os.path.join(root, "include", "upcycle", layer), os.path.join(root, "src", layer)]
    if layer == "backend":
        dirs.append(os.path.join(root, "kernels"))
    for d in dirs:
        for base, _, names in os.walk(d):
            for n in names:
                if n.endswith((".hpp", ".cpp", ".cu", ".cuh", ".inl")):
                    yield os.path.join(base, n)


def main():
    root = sys.argv[1]
    errors, checked = [], 0
    for layer in ORDER:
        for path in files_of(root, layer):
            checked += 1
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    m = INCLUDE.match(line)
                    if not m:
                        continue
                    target = m.group(1)
                    if target not in RANK:
                        errors.append(f"{path}:{lineno}: includes unknown layer '{target}'")
                    elif RANK[target] > RANK[layer]:
                        errors.append(f"{path}:{lineno}: {layer} includes the higher layer {target}")
    if checked == 0:
        print("check_layers: no source files found under", root)
        return 1
    for e in errors:
        print(e)
    print(f"check_layers: {checked} files, {len(errors)} upward includes")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
