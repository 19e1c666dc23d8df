#!/usr/bin/python3
"""Reads an upcycle checkpoint with h5py (not with our own reader) and checks the documented layout
(include/upcycle/train/checkpoint.hpp, docs/training.md "Checkpoints") for the tiny ViT of
tests/support/tiny_configs.hpp (width 16, depth 2, heads 2, ffn_width 32, patch 7 on 28x28x1, 10
classes).

    /usr/bin/python3 check_checkpoint.py CHECKPOINT.h5 --step N [--stage dense]

Version 2 files are checksummed (docs/training.md "Integrity"): every dataset with data has the
Fletcher32 filter on a chunked layout (or, a scalar, compact storage), and each string attribute has
a "<name>.crc32" beside it; h5py must read them all, and the CRC-32s must match zlib's.

Exit 0 when every check passes, 1 otherwise (each failure printed).
"""

import argparse
import sys
import zlib

import h5py
import numpy as np

WIDTH, DEPTH, FFN, PATCH, CHANNELS, IMAGE, CLASSES = 16, 2, 32, 7, 1, 28, 10

# Documented datasets and their shapes (a subset that pins the naming scheme and every kind of
# parameter; the rest is covered by the /model <-> /optimizer correspondence below).
EXPECTED_MODEL = {
    "patch_embed/weight": [WIDTH, PATCH * PATCH * CHANNELS],
    "patch_embed/bias": [WIDTH],
    "cls_token": [WIDTH],
    "pos_embed": [(IMAGE // PATCH) ** 2 + 1, WIDTH],
    "head/weight": [CLASSES, WIDTH],
    "head/bias": [CLASSES],
    "ln_f/gamma": [WIDTH],
    "ln_f/beta": [WIDTH],
}
for b in range(DEPTH):
    p = f"blocks/{b:02d}/"
    EXPECTED_MODEL.update({
        p + "attn/qkv/weight": [3 * WIDTH, WIDTH],
        p + "attn/qkv/bias": [3 * WIDTH],
        p + "attn/out/weight": [WIDTH, WIDTH],
        p + "mlp/fc1/weight": [FFN, WIDTH],
        p + "mlp/fc2/weight": [WIDTH, FFN],
        p + "ln1/gamma": [WIDTH],
        p + "ln2/beta": [WIDTH],
    })

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)
    return cond


def text(v):
    return v.decode() if isinstance(v, (bytes, np.bytes_)) else str(v)


def datasets(group):
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = obj

    group.visititems(visit)
    return out


def check_checksums(f):
    """Every dataset of a version-2 file is checksummed and reads back; string attributes carry a CRC-32."""
    everything = datasets(f)
    check(len(everything) > 0, "no datasets")
    for name, ds in everything.items():
        if ds.size == 0:
            continue
        layout = ds.id.get_create_plist().get_layout()
        if ds.shape == ():
            check(layout == h5py.h5d.COMPACT, f"/{name}: a scalar not stored compact (layout {layout})")
        else:
            check(ds.chunks is not None and ds.fletcher32, f"/{name}: no Fletcher32 checksum (chunks {ds.chunks})")
        ds[()]  # h5py verifies the checksum while reading; a mismatch raises
    for key in ("format", "stage", "config"):
        crc = key + ".crc32"
        if check(crc in f.attrs, f"root attribute '{crc}' missing"):
            text_crc = zlib.crc32(text(f.attrs[key]).encode("utf-8"))
            check(int(f.attrs[crc]) == text_crc, f"root attribute '{crc}' = {int(f.attrs[crc])}, zlib says {text_crc}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--step", type=int, required=True)
    ap.add_argument("--stage", default="dense")
    args = ap.parse_args()

    with h5py.File(args.checkpoint, "r") as f:
        a = f.attrs
        for key in ("format", "version", "step", "stage", "config"):
            check(key in a, f"root attribute '{key}' missing")
        if failures:
            return 1
        check(text(a["format"]) == "upcycle-checkpoint", f"format = {a['format']!r}")
        version = int(a["version"])
        check(version in (1, 2), f"version = {a['version']!r}, expected 1 or 2")
        check(int(a["step"]) == args.step, f"step = {a['step']!r}, expected {args.step}")
        check(text(a["stage"]) == args.stage, f"stage = {a['stage']!r}, expected {args.stage}")
        config = text(a["config"])
        for needle in ("[model]", "kind = vit", f"width = {WIDTH}", f"depth = {DEPTH}", f"ffn_width = {FFN}",
                       f"patch_size = {PATCH}", "[train]"):
            check(needle in config, f"config attribute lacks '{needle}'")

        check("model" in f and isinstance(f["model"], h5py.Group), "/model group missing")
        model = datasets(f["model"])
        for name, shape in EXPECTED_MODEL.items():
            if check(name in model, f"/model/{name} missing"):
                ds = model[name]
                check(list(ds.shape) == shape, f"/model/{name}: shape {list(ds.shape)}, expected {shape}")
                check(ds.dtype == np.float32, f"/model/{name}: dtype {ds.dtype}, expected float32")
                check(bool(np.all(np.isfinite(ds[()]))), f"/model/{name}: non-finite values")

        # Optimiser moments beside every parameter, and nothing else.
        for moment in ("m", "v"):
            path = f"optimizer/{moment}"
            if not check(path in f, f"/{path} group missing"):
                continue
            slots = datasets(f[path])
            check(sorted(slots) == sorted(model),
                  f"/{path} names differ from /model: only in model {sorted(set(model) - set(slots))}, "
                  f"only in {path} {sorted(set(slots) - set(model))}")
            for name in set(slots) & set(model):
                check(slots[name].shape == model[name].shape,
                      f"/{path}/{name}: shape {slots[name].shape} != /model/{name} {model[name].shape}")
            if moment == "v" and slots:
                check(all(np.all(ds[()] >= 0) for ds in slots.values()), "/optimizer/v has negative entries")
        if check("optimizer" in f and "steps" in f["optimizer"].attrs, "/optimizer attribute 'steps' missing"):
            check(int(f["optimizer"].attrs["steps"]) == args.step,
                  f"/optimizer steps = {f['optimizer'].attrs['steps']}, expected {args.step}")

        for name in ("state/rng/dropout", "state/data/cursor"):
            if check(name in f and isinstance(f[name], h5py.Dataset), f"/{name} missing"):
                ds = f[name]
                check(list(ds.shape) == [2], f"/{name}: shape {list(ds.shape)}, expected [2]")
                check(ds.dtype == np.int64, f"/{name}: dtype {ds.dtype}, expected int64")
        if "state/data/cursor" in f:
            epoch, position = (int(x) for x in f["state/data/cursor"][()])
            check(epoch >= 0 and position >= 0, f"/state/data/cursor = [{epoch}, {position}]")

        if version >= 2:
            check_checksums(f)

    if failures:
        print(f"{args.checkpoint}: {len(failures)} check(s) failed")
        return 1
    print(f"{args.checkpoint}: layout OK ({len(model)} model datasets, step {args.step})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
