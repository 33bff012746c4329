#!/usr/bin/env python3
"""End-state checks of benches/cdc.rs, with DuckDB (and its delta extension, offline).

  cdc_check.py upsert TABLE
      {"rows": N, "ids": distinct ids, "seq_sum": "sum of seq"} of the upsert bench's table.
  cdc_check.py debezium VALUES UPSERT HISTORY
      VALUES: the Debezium JSON values the bench produced, one a line. DuckDB
      unwraps them itself (after for c/u/r, before for d; source.lsn orders) and
      computes the reference end state of each table: upsert, the last change per
      id unless a delete; history, every c/u/r change a version from its LSN to
      the next change of its id (current when none). Prints, per table, its rows,
      the reference's rows, and the rows of each side the other lacks (EXCEPT ALL).
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "support"))
from delta_read import connect, sql_str  # noqa: E402

ROW = "STRUCT(id INTEGER, first_name VARCHAR, last_name VARCHAR, email VARCHAR)"


def scalar(con, sql):
    return con.execute(sql).fetchone()[0]


def compare(con, table_sql, reference_sql):
    return {
        "table": scalar(con, f"SELECT count(*) FROM ({table_sql})"),
        "reference": scalar(con, f"SELECT count(*) FROM ({reference_sql})"),
        "missing": scalar(con, f"SELECT count(*) FROM ({reference_sql} EXCEPT ALL {table_sql})"),
        "extra": scalar(con, f"SELECT count(*) FROM ({table_sql} EXCEPT ALL {reference_sql})"),
    }


def debezium(con, values, upsert, history):
    con.execute(
        f"""CREATE TABLE changes AS
        SELECT CASE WHEN op = 'd' THEN before ELSE after END AS r, op, source.lsn AS lsn
        FROM read_json({sql_str(values)}, format = 'newline_delimited',
            columns = {{before: '{ROW}', after: '{ROW}', op: 'VARCHAR', source: 'STRUCT(lsn BIGINT)'}})"""
    )
    up_ref = """SELECT r.id, r.first_name, r.last_name, r.email, op, lsn FROM (
        SELECT *, row_number() OVER (PARTITION BY r.id ORDER BY lsn DESC) AS n FROM changes)
        WHERE n = 1 AND op <> 'd'"""
    up_tbl = f"""SELECT id, first_name, last_name, email, __op, __source_lsn
        FROM delta_scan({sql_str(upsert)})"""
    hist_ref = """SELECT id, first_name, last_name, email, op, lsn, end_at, end_at IS NULL FROM (
        SELECT r.id, r.first_name, r.last_name, r.email, op, lsn,
            lead(lsn) OVER (PARTITION BY r.id ORDER BY lsn) AS end_at FROM changes)
        WHERE op <> 'd'"""
    hist_tbl = f"""SELECT id, first_name, last_name, email, __op, __start_at, __end_at, __is_current
        FROM delta_scan({sql_str(history)})"""
    return {"upsert": compare(con, up_tbl, up_ref), "history": compare(con, hist_tbl, hist_ref)}


def main():
    con = connect()
    cmd = sys.argv[1]
    if cmd == "upsert":
        t = sql_str(os.path.abspath(sys.argv[2]))
        rows, ids, seq = con.execute(
            f"SELECT count(*), count(DISTINCT id), CAST(sum(seq) AS VARCHAR) FROM delta_scan({t})"
        ).fetchone()
        out = {"rows": rows, "ids": ids, "seq_sum": seq}
    elif cmd == "debezium":
        values, upsert, history = (os.path.abspath(p) for p in sys.argv[2:5])
        out = debezium(con, values, upsert, history)
    else:
        sys.exit(f"unknown command {cmd}")
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
