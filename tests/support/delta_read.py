#!/usr/bin/env python3
"""Independent Delta table reader for inlet's tests (DuckDB + delta extension, offline).

Usage: delta_read.py TABLE_PATH [--txn APPID ...] [--sql "SELECT ... FROM t"]

Prints one JSON object:
  {"rows": N, "columns": [...], "txn": {appid: version|null}, "result": [[...], ...]}
"result" only with --sql; there `t` is a view over delta_scan(TABLE_PATH).
Non-JSON values are stringified (str()): BLOBs come out as Python reprs (b'...'),
so use hex(col) / decode(col) in --sql for exact comparisons. TIMESTAMPTZ values
are cast to VARCHAR in UTC (DuckDB's Python conversion of them needs pytz).
"""
import argparse
import glob
import json
import math
import os
import sys

import duckdb
import duckdb_extension_delta


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


def ident(s):
    return '"' + s.replace('"', '""') + '"'


def connect():
    pkg = os.path.dirname(duckdb_extension_delta.__file__)
    exts = sorted(glob.glob(os.path.join(pkg, "extensions", "*", "delta.duckdb_extension")))
    if not exts:
        sys.exit(f"delta.duckdb_extension not found under {pkg}")
    con = duckdb.connect()
    # Never reach the network: load the extension shipped in the wheel by path.
    con.execute("SET autoinstall_known_extensions=false; SET autoload_known_extensions=false;")
    con.execute(f"LOAD {sql_str(exts[-1])}")
    con.execute("SET TimeZone='UTC'")
    return con


def jsonable(v):
    if isinstance(v, dict):  # MAP / STRUCT; map keys may be non-str
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # NaN/inf are not valid JSON for strict parsers (serde_json)
    return v


def run_sql(con, sql):
    cols = con.execute(f"DESCRIBE {sql}").fetchall()
    if any("TIME ZONE" in c[1] for c in cols):
        # Wrap only when needed; cast tz-aware values (also nested) to text.
        sel = ", ".join(
            f"CAST({ident(n)} AS VARCHAR) AS {ident(n)}" if "TIME ZONE" in ty else ident(n)
            for n, ty, *_ in cols
        )
        sql = f"SELECT {sel} FROM ({sql}) AS q"
    return [jsonable(list(r)) for r in con.execute(sql).fetchall()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("table")
    ap.add_argument("--txn", nargs="+", action="extend", default=[], metavar="APPID")
    ap.add_argument("--sql")
    a = ap.parse_args()

    path = os.path.abspath(a.table)  # hand DuckDB one unambiguous absolute path
    con = connect()
    con.execute(f"CREATE VIEW t AS SELECT * FROM delta_scan({sql_str(path)})")
    out = {
        "rows": con.execute("SELECT count(*) FROM t").fetchone()[0],
        "columns": [r[0] for r in con.execute("DESCRIBE t").fetchall()],
        "txn": {},
    }
    if a.txn:
        # delta_get_transaction_version(catalog, app_id) takes an ATTACHed catalog name, not a path.
        con.execute(f"ATTACH {sql_str(path)} AS inlet_delta (TYPE delta, READ_ONLY)")
        for app in a.txn:
            out["txn"][app] = con.execute(
                "SELECT version FROM delta_get_transaction_version('inlet_delta', ?)", [app]
            ).fetchone()[0]
    if a.sql is not None:
        out["result"] = run_sql(con, a.sql)
    json.dump(out, sys.stdout, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
