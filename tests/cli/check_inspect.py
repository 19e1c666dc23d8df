#!/usr/bin/python3
"""Checks the --json output of upcycle_inspect against h5py and numpy (the oracle computes every
number itself from the checkpoint; nothing is written down from a previous run).

    check_inspect.py summary  OUT.json CKPT DEFAULTS.ini
    check_inspect.py tensors  OUT.json CKPT
    check_inspect.py experts  OUT.json CKPT
    check_inspect.py diff     OUT.json A B
    check_inspect.py verify   OUT.json CKPT

DEFAULTS.ini is the schema defaults as `upcycle_train EMPTY.ini --print-config` prints them.
Exit 0 when every check passes, 1 otherwise (each failure printed).
"""

import configparser
import json
import math
import os
import re
import sys

import h5py
import numpy as np

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)
    return cond


def reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name} (non-finite numbers must be null)")


def load_json(path):
    with open(path) as f:
        text = f.read()
    check(text.count("\n") == 1 and text.endswith("\n"), f"{path}: expected one JSON document on one line")
    return json.loads(text, parse_constant=reject_constant)


def close(got, want, scale=0.0, rtol=1e-9):
    """got (from JSON) equals want (numpy float64): None exactly when want is not finite."""
    want = float(want)
    if not math.isfinite(want):
        return got is None
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        return False
    return abs(got - want) <= rtol * (abs(want) + scale) + 1e-300


def datasets(f):
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out["/" + name] = obj

    f.visititems(visit)
    return out


def text(v):
    return v.decode() if isinstance(v, (bytes, np.bytes_)) else str(v)


def read_ini(text_value):
    p = configparser.ConfigParser(interpolation=None)
    p.optionxform = str
    p.read_string(text_value)
    return {f"{s}.{k}": v for s in p.sections() for k, v in p[s].items()}


DTYPES = {np.dtype("float32"): "f32", np.dtype("float64"): "f64", np.dtype("int32"): "i32", np.dtype("int64"): "i64"}


def param_group(name):
    parts = name.split("/")
    if "moe" in parts:
        if "experts" in parts:
            return "experts"
        if "router" in parts:
            return "routers"
        if "shared" in parts:
            return "shared_expert"
    if "attn" in parts:
        return "attention"
    if "mlp" in parts:
        return "dense_ffn"
    if parts[0] in ("patch_embed", "cls_token", "pos_embed", "tok_embed"):
        return "embeddings"
    return "norms_other"


EXPERT = re.compile(r"^/model/(.+)/moe/experts/([^/]+)$")


def moe_blocks(ds):
    blocks = {}
    for name in ds:
        m = EXPERT.match(name)
        if m:
            blocks.setdefault(m.group(1), {})[m.group(2)] = name
    return blocks


def expert_vectors(ds, tensors):
    """[E, n] float64: w1 then w2 of each expert, flattened."""
    parts = [ds[tensors[w]][()].astype(np.float64) for w in ("w1", "w2") if w in tensors]
    return np.concatenate([p.reshape(p.shape[0], -1) for p in parts], axis=1)


def check_summary(out, path, defaults_path):
    o = load_json(out)
    with h5py.File(path, "r") as f, open(defaults_path) as d:
        ds = datasets(f)
        check(o["file_size"] == os.path.getsize(path), f"file_size {o['file_size']} != {os.path.getsize(path)}")
        check(o["format"] == text(f.attrs["format"]) == "upcycle-checkpoint", "format")
        check(o["version"] == int(f.attrs["version"]), "version")
        check(o["stage"] == text(f.attrs["stage"]), f"stage {o['stage']} != {text(f.attrs['stage'])}")
        check(o["step"] == int(f.attrs["step"]), f"step {o['step']} != {int(f.attrs['step'])}")
        check(o["datasets"] == len(ds), f"datasets {o['datasets']} != {len(ds)}")

        ini = read_ini(text(f.attrs["config"]))
        defaults = read_ini(d.read())
        conf = dict(o["config"])
        non_default = conf.pop("non_default")
        want_nd = {k: v for k, v in ini.items() if defaults.get(k) != v}
        check(non_default == want_nd, f"non-default keys {non_default} != {want_nd}")
        for k in ("model.kind", "model.width", "model.depth", "model.heads", "model.ffn_width"):
            check(k in conf, f"config lacks the key line {k}")
        for k, v in conf.items():
            check(ini.get(k) == v, f"config {k} = {v!r}, the checkpoint's INI has {ini.get(k)!r}")

        model = {n[len("/model/"):]: v for n, v in ds.items() if n.startswith("/model/")}
        want = {g: 0 for g in ("embeddings", "attention", "dense_ffn", "experts", "shared_expert", "routers",
                               "norms_other")}
        for n, v in model.items():
            want[param_group(n)] += v.size
        p = o["parameters"]
        check(p["total"] == sum(v.size for v in model.values()), f"total parameters {p['total']}")
        check(p["tensors"] == len(model), f"parameter tensors {p['tensors']} != {len(model)}")
        for g, n in want.items():
            check(p[g] == n, f"parameters {g}: {p[g]} != {n}")
        check(sum(p[g] for g in want) == p["total"], "the groups do not add up to the total")

        blocks = moe_blocks(ds)
        want_blocks = [{"block": b, "num_experts": ds[t["w1"]].shape[0], "top_k": int(ini["moe.top_k"])}
                       for b, t in sorted(blocks.items())]
        check(o["moe_blocks"] == want_blocks, f"moe_blocks {o['moe_blocks']} != {want_blocks}")
        if blocks:
            check("moe.num_experts" in conf and "moe.top_k" in conf, "an MoE checkpoint's config lacks E and k")

        moments = [n for n in ds if n.startswith("/optimizer/m/")]
        steps = int(f["optimizer"].attrs["steps"]) if "optimizer" in f else None
        check(o["optimizer"] == {"present": "optimizer" in f, "tensors": len(moments), "steps": steps},
              f"optimizer {o['optimizer']}")
        teacher = [v for n, v in ds.items() if n.startswith("/teacher/")]
        check(o["teacher"] == {"present": bool(teacher), "tensors": len(teacher),
                               "parameters": sum(v.size for v in teacher)}, f"teacher {o['teacher']}")
        rng = [int(x) for x in f["/state/rng/dropout"][()]]
        check(o["rng"] == {"seed": rng[0], "offset": rng[1]}, f"rng {o['rng']} != {rng}")
        cur = [int(x) for x in f["/state/data/cursor"][()]]
        check(o["data_cursor"] == {"epoch": cur[0], "position": cur[1]}, f"data_cursor {o['data_cursor']} != {cur}")
        check(o["upcycle_record"] == ("upcycle" in f), "upcycle_record")


def check_tensors(out, path):
    o = load_json(out)
    with h5py.File(path, "r") as f:
        ds = datasets(f)
        got = {t["name"]: t for t in o["tensors"]}
        check(sorted(got) == sorted(ds), f"tensor names differ: {sorted(set(got) ^ set(ds))}")
        flagged = 0
        for name, d in ds.items():
            if name not in got:
                continue
            t, x = got[name], d[()].astype(np.float64).ravel()
            fin = x[np.isfinite(x)]
            nan, inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
            flagged += nan + inf > 0
            check(t["shape"] == list(d.shape), f"{name}: shape {t['shape']} != {list(d.shape)}")
            check(t["dtype"] == DTYPES[d.dtype], f"{name}: dtype {t['dtype']} != {d.dtype}")
            check(t["numel"] == d.size, f"{name}: numel")
            check(t["nan"] == nan and t["inf"] == inf, f"{name}: nan/inf {t['nan']}/{t['inf']} != {nan}/{inf}")
            scale = float(np.abs(fin).max()) if fin.size else 0.0
            empty = fin.size == 0
            want = {"norm": np.sqrt(np.sum(fin * fin)),
                    "mean": math.nan if empty else fin.mean(), "std": math.nan if empty else fin.std(),
                    "min": math.nan if empty else fin.min(), "max": math.nan if empty else fin.max()}
            for k, v in want.items():
                check(close(t[k], v, scale), f"{name}: {k} {t[k]!r} != {v!r}")
        check(o["nonfinite_tensors"] == flagged, f"nonfinite_tensors {o['nonfinite_tensors']} != {flagged}")


def check_experts(out, path):
    o = load_json(out)
    with h5py.File(path, "r") as f:
        ds = datasets(f)
        ini = read_ini(text(f.attrs["config"]))
        blocks = moe_blocks(ds)
        check([b["block"] for b in o["blocks"]] == sorted(blocks), f"blocks {[b['block'] for b in o['blocks']]}")
        for b in o["blocks"]:
            name, tensors = b["block"], blocks.get(b["block"], {})
            if not tensors:
                continue
            E = ds[tensors["w1"]].shape[0]
            check(b["num_experts"] == E and b["top_k"] == int(ini["moe.top_k"]), f"{name}: E, k")
            norms = b["expert_norms"]
            check(sorted(norms) == sorted(list(tensors) + ["weights"]), f"{name}: expert_norms keys {sorted(norms)}")
            for t, dname in tensors.items():
                x = ds[dname][()].astype(np.float64).reshape(E, -1)
                want = np.linalg.norm(x, axis=1)
                check(all(close(g, w) for g, w in zip(norms.get(t, []), want)) and len(norms.get(t, [])) == E,
                      f"{name}: |{t}| {norms.get(t)} != {want}")
            v = expert_vectors(ds, tensors)
            n = np.linalg.norm(v, axis=1)
            check(all(close(g, w) for g, w in zip(norms["weights"], n)), f"{name}: weight norms")
            cos = (v @ v.T) / np.outer(n, n)
            got = np.array(b["cosine"], dtype=np.float64)
            check(got.shape == (E, E) and np.all(np.abs(got - cos) <= 1e-9), f"{name}: cosine {got} != {cos}")
            iu = np.triu_indices(E, 1)
            check(close(b["mean_cosine"], cos[iu].mean() if E > 1 else math.nan), f"{name}: mean_cosine")
            router = ds[f"/model/{name}/moe/router/weight"][()].astype(np.float64)
            check(all(close(g, w) for g, w in zip(b["router_row_norms"], np.linalg.norm(router, axis=1))),
                  f"{name}: router row norms")
            bias = f"/state/moe/{name}/aux_free_bias"
            if bias in ds:
                check(b["aux_free_bias"] == [float(x) for x in ds[bias][()]], f"{name}: aux_free_bias")
            else:
                check(b["aux_free_bias"] is None, f"{name}: aux_free_bias without the dataset")
            record = {n.rsplit("/", 1)[1]: d for n, d in ds.items() if n.startswith(f"/upcycle/{name}/")}
            if record:
                rec = b["upcycle"] or {}
                check(sorted(rec) == sorted(record), f"{name}: upcycle record keys {sorted(rec)}")
                for k, d in record.items():
                    check(rec.get(k) == d[()].tolist(), f"{name}: upcycle {k} {rec.get(k)} != {d[()].tolist()}")
            else:
                check(b["upcycle"] is None, f"{name}: an upcycle record without /upcycle datasets")


def check_diff(out, path_a, path_b):
    o = load_json(out)
    with h5py.File(path_a, "r") as fa, h5py.File(path_b, "r") as fb:
        da, db = datasets(fa), datasets(fb)
        check(o["a"]["file"] == path_a and o["b"]["file"] == path_b, "files")
        check(o["a"]["step"] == int(fa.attrs["step"]) and o["b"]["step"] == int(fb.attrs["step"]), "steps")
        check(o["only_in_a"] == sorted(set(da) - set(db)), f"only_in_a {o['only_in_a']}")
        check(o["only_in_b"] == sorted(set(db) - set(da)), f"only_in_b {o['only_in_b']}")
        both = sorted(set(da) & set(db))
        mism = [n for n in both if da[n].shape != db[n].shape]
        check([m["name"] for m in o["shape_mismatches"]] == mism, f"shape_mismatches {o['shape_mismatches']}")
        for m in o["shape_mismatches"]:
            n = m["name"]
            check(m["shape_a"] == list(da[n].shape) and m["shape_b"] == list(db[n].shape), f"{n}: mismatch shapes")
        got = {t["name"]: t for t in o["tensors"]}
        same = [n for n in both if n not in mism]
        check(sorted(got) == same, f"compared tensors differ: {sorted(set(got) ^ set(same))}")
        differing = 0
        for n in same:
            if n not in got:
                continue
            a, b = da[n][()].astype(np.float64).ravel(), db[n][()].astype(np.float64).ravel()
            ok = np.isfinite(a) & np.isfinite(b)
            diff = a[ok] - b[ok]
            dsq, bsq = float(np.sum(diff * diff)), float(np.sum(b[ok] * b[ok]))
            rel = 0.0 if dsq == 0 else (math.inf if bsq == 0 else math.sqrt(dsq / bsq))
            differing += dsq > 0 or not ok.all()
            t = got[n]
            check(close(t["max_abs_diff"], np.abs(diff).max() if diff.size else 0.0),
                  f"{n}: max_abs_diff {t['max_abs_diff']}")
            check(close(t["norm_diff"], math.sqrt(dsq)), f"{n}: norm_diff {t['norm_diff']} != {math.sqrt(dsq)}")
            check(close(t["rel_norm_diff"], rel), f"{n}: rel_norm_diff {t['rel_norm_diff']} != {rel}")
            check(t["nonfinite"] == int((~ok).sum()), f"{n}: nonfinite")
        check(o["tensors_compared"] == len(same) and o["tensors_differing"] == differing,
              f"tensors_compared / differing {o['tensors_compared']} / {o['tensors_differing']}")
        ba, bb = moe_blocks(da), moe_blocks(db)
        want_blocks = [b for b in sorted(ba) if b in bb and da[ba[b]["w1"]].shape[0] == db[bb[b]["w1"]].shape[0]]
        check([e["block"] for e in o["experts"]] == want_blocks, f"expert blocks {[e['block'] for e in o['experts']]}")
        for e in o["experts"]:
            name = e["block"]
            if name not in want_blocks:
                continue
            va, vb = expert_vectors(da, ba[name]), expert_vectors(db, bb[name])
            if va.shape != vb.shape:
                check(e["drift"] is None, f"{name}: drift of experts of other shapes")
                continue
            want = np.linalg.norm(va - vb, axis=1) / np.linalg.norm(vb, axis=1)
            check(e["drift"] is not None and len(e["drift"]) == len(want)
                  and all(close(g, w) for g, w in zip(e["drift"], want)), f"{name}: drift {e['drift']} != {want}")


def check_verify(out, path):
    o = load_json(out)
    with h5py.File(path, "r") as f:
        n = len(datasets(f))
    check(o == {"file": path, "ok": True, "datasets_checked": n, "problems": []},
          f"verify {o}, expected {n} datasets ok")


def main():
    if len(sys.argv) < 4:
        print(__doc__)
        return 2
    view, args = sys.argv[1], sys.argv[2:]
    checks = {"summary": check_summary, "tensors": check_tensors, "experts": check_experts, "diff": check_diff,
              "verify": check_verify}
    try:
        checks[view](*args)
    except Exception as e:  # a missing key or bad JSON is a failure of the output, not of the checker
        check(False, f"{view} {' '.join(args)}: {type(e).__name__}: {e}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
