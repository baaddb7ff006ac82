#!/usr/bin/env python3
"""Print an .h5ad's structure as JSON, for the nf-test snapshots (tests/nf_test_helpers/Snapshots.groovy).

The structure is what a step promises and a seed does not change: the shape, the obs and var
columns, and the obsm, layers and uns keys; never values (floats of a trained model differ
between machines). Read with h5py, so no AnnData import per call.
"""

from __future__ import annotations

import json
import sys

import h5py


def _columns(group: h5py.Group) -> list[str]:
    return [str(c) for c in group.attrs.get("column-order", [])]


def _keys(f: h5py.File, name: str) -> list[str]:
    return sorted(f[name].keys()) if name in f else []


def structure(path: str) -> dict:
    with h5py.File(path, "r") as f:
        n_obs = f["obs"][f["obs"].attrs["_index"]].shape[0]
        n_vars = f["var"][f["var"].attrs["_index"]].shape[0]
        return {"n_obs": n_obs, "n_vars": n_vars, "obs": _columns(f["obs"]), "var": _columns(f["var"]),
                "obsm": _keys(f, "obsm"), "layers": _keys(f, "layers"), "uns": _keys(f, "uns")}


if __name__ == "__main__":
    print(json.dumps(structure(sys.argv[1])))
