#!/usr/bin/env python3
"""Spark half of bench/clickstream_sql_bench.py: run tusk's clickstream SQL on Spark.

Reads the REES46-layout CSV logs that `tusk datagen clickstream` writes, with the same
explicit schema tusk gives DataFusion, runs the statements of
crates/tusk-preprocess/sql/clickstream.sql (read at run time, with ${negatives} and ${seed}
substituted and a few programmatic Spark-dialect translations, see `translate`) and writes
the final query's result as Parquet partitioned by `split` under --output.

    /root/.cache/tusk/spark-venv/bin/python bench/spark/clickstream.py \
        --input /tmp/x/logs --output /tmp/x/spark-out [--negatives 4] [--seed 42] \
        [--master 'local[2]'] [--driver-memory 4g] [--shuffle-partitions 4] [--json result.json]

    # compare a result row by row with tusk's OUTPUT/{train,test} Parquet datasets:
    .../python bench/spark/clickstream.py --output /tmp/x/spark-out --compare-tusk /tmp/x/tusk-out

    # only print the translated SQL (no Spark needed):
    python3 bench/spark/clickstream.py --print-sql

Prints progress on stderr; with --json writes {"rows": {"train": N, "test": M}, "query_s": ...,
"session_s": ..., "spark_version": ..., "translations": [...]} for the bench driver.
"""

import argparse
import json
import os
import re
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_SQL = os.path.join(REPO, "crates", "tusk-preprocess", "sql", "clickstream.sql")

# The same columns and types tusk registers for `events` (sql.rs, clickstream_schema()).
SCHEMA_DDL = (
    "event_time STRING, event_type STRING, product_id BIGINT, category_id BIGINT, "
    "category_code STRING, brand STRING, price DOUBLE, user_id BIGINT, user_session STRING"
)


def log(*a):
    print("[spark]", *a, file=sys.stderr, flush=True)


def split_statements(script):
    """Split on `;` outside quotes, dropping `--` comments (as tusk's split_statements)."""
    out, cur, quote, i, n = [], [], None, 0, len(script)
    while i < n:
        c = script[i]
        if quote is not None:
            cur.append(c)
            if c == quote:
                quote = None
        elif c in ("'", '"'):
            quote = c
            cur.append(c)
        elif c == "-" and i + 1 < n and script[i + 1] == "-":
            j = script.find("\n", i)
            if j < 0:
                break
            cur.append("\n")
            i = j
        elif c == ";":
            s = "".join(cur).strip()
            if s:
                out.append(s)
            cur = []
        else:
            cur.append(c)
        i += 1
    s = "".join(cur).strip()
    if s:
        out.append(s)
    return out


def _replace_call(sql, opener, make):
    """Replace every `opener ... )` call (balanced parentheses) with make(inner args text)."""
    count = 0
    pat = re.compile(opener, re.IGNORECASE)
    while True:
        m = pat.search(sql)
        if not m:
            return sql, count
        depth, j = 1, m.end()
        while depth:
            if j >= len(sql):
                raise ValueError(f"unbalanced parentheses after {m.group(0)!r}")
            if sql[j] == "(":
                depth += 1
            elif sql[j] == ")":
                depth -= 1
            j += 1
        sql = sql[: m.start()] + make(sql[m.end(): j - 1]) + sql[j:]
        count += 1


# (rule as listed in the bench output, function statement → (statement, replacements))
RULES = [
    # views live for the session only
    ("CREATE VIEW v → CREATE OR REPLACE TEMP VIEW v",
     lambda s: re.subn(r"^\s*CREATE\s+VIEW\b", "CREATE OR REPLACE TEMP VIEW", s, flags=re.IGNORECASE)),
    # a materialised table: Spark's eager in-memory equivalent (CREATE TABLE AS would write a
    # managed table to the warehouse directory)
    ("CREATE TABLE t AS → CACHE TABLE t AS",
     lambda s: re.subn(r"^\s*CREATE\s+TABLE\s+(\w+)\s+AS\b", r"CACHE TABLE \1 AS", s, flags=re.IGNORECASE)),
    # DataFusion's range(N) table function has the column `value`, Spark's has `id`
    ("range(N) AS ks → (SELECT id AS value FROM range(N)) AS ks",
     lambda s: re.subn(r"\brange\((\d+)\)\s+AS\s+(\w+)", r"(SELECT id AS value FROM range(\1)) AS \2",
                       s, flags=re.IGNORECASE)),
    # seconds since the epoch (Spark has no 'epoch' field in date_part)
    ("date_part('epoch', X) → unix_timestamp(X)",
     lambda s: _replace_call(s, r"\bdate_part\(\s*'epoch'\s*,",
                             lambda inner: f"unix_timestamp({inner.strip()})")),
]


def translate(statements):
    """DataFusion SQL → Spark SQL, minimal rewrites. Returns (statements, rules used with counts)."""
    used = {name: 0 for name, _ in RULES}
    out = []
    for s in statements:
        for name, rule in RULES:
            s, k = rule(s)
            used[name] += k
        out.append(s)
    return out, [f"{name} ({n}x)" for name, n in used.items() if n]


def load_sql(path, negatives, seed):
    with open(path) as f:
        script = f.read()
    script = script.replace("${negatives}", str(negatives)).replace("${seed}", str(seed))
    return translate(split_statements(script))


def compare(spark, spark_out, tusk_out):
    """Rows only in one side, per split, over all columns (tusk's columns cast to Spark's types)."""
    from pyspark.sql import functions as F

    res = {}
    s_all = spark.read.parquet(spark_out)
    for split in ("train", "test"):
        s = s_all.where(F.col("split") == split).drop("split")
        t = spark.read.parquet(os.path.join(tusk_out, split, "*.parquet"))
        types = dict(s.dtypes)
        if sorted(t.columns) != sorted(s.columns):
            res[split] = {"error": f"columns differ: tusk {sorted(t.columns)} spark {sorted(s.columns)}"}
            continue
        cols = sorted(s.columns)
        t = t.select(*[F.col(c).cast(types[c]) for c in cols])
        s = s.select(*cols)
        only_t, only_s = t.exceptAll(s).count(), s.exceptAll(t).count()
        res[split] = {"only_tusk": only_t, "only_spark": only_s}
        log(f"{split}: rows only in tusk {only_t}, only in Spark {only_s}")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input")
    ap.add_argument("--output")
    ap.add_argument("--sql", default=DEFAULT_SQL)
    ap.add_argument("--negatives", type=int, default=4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--shuffle-partitions", type=int, default=4)
    ap.add_argument("--json")
    ap.add_argument("--print-sql", action="store_true", help="print the translated SQL and exit")
    ap.add_argument("--compare-tusk", metavar="DIR",
                    help="instead of running the SQL: compare --output (this script's result) row by row "
                         "with tusk's DIR/train and DIR/test Parquet datasets (multiset difference)")
    a = ap.parse_args()

    statements, translations = load_sql(a.sql, a.negatives, a.seed)
    if a.print_sql:
        for s in statements:
            print(s + ";\n")
        print("-- translations: " + "; ".join(translations))
        return
    if a.compare_tusk:
        if not a.output:
            ap.error("--compare-tusk needs --output (the Spark result to compare)")
    elif not a.input or not a.output:
        ap.error("--input and --output are required (or --print-sql)")

    try:
        import pyspark
        from pyspark.sql import SparkSession
    except ImportError:
        sys.exit("error: pyspark is not installed in this Python; see bench/clickstream_sql_bench.py "
                 "(python3 -m venv /root/.cache/tusk/spark-venv && "
                 "/root/.cache/tusk/spark-venv/bin/pip install pyspark==4.0.1)")

    t0 = time.perf_counter()
    spark = (
        SparkSession.builder.master(a.master)
        .appName("tusk-clickstream-bench")
        # the JVM is started by this process, so driver memory set here sizes its heap (-Xmx)
        .config("spark.driver.memory", a.driver_memory)
        .config("spark.sql.shuffle.partitions", str(a.shuffle_partitions))
        # DataFusion's CAST(... AS TIMESTAMP) has no time zone (UTC epoch); Spark's TIMESTAMP
        # is local-time, so pin the session zone to UTC for identical day numbers
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.parquet.compression.codec", "snappy")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    session_s = time.perf_counter() - t0
    heap_mb = spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory() / 2**20
    log(f"Spark {spark.version} {a.master}, session up in {session_s:.1f} s, JVM max heap {heap_mb:.0f} MiB, "
        f"shuffle partitions {a.shuffle_partitions}")

    if a.compare_tusk:
        res = compare(spark, a.output, a.compare_tusk)
        spark.stop()
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
        return

    t1 = time.perf_counter()
    events = (
        spark.read.schema(SCHEMA_DDL)
        .option("header", "true")
        # like tusk: every *.csv below the directory; no date=… partition column
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", "*.csv")
        .csv(a.input)
    )
    events.createOrReplaceTempView("events")
    # ${last_day}: tusk computes it in its event-type counting pass; Spark does the same pass
    last_day = spark.sql(
        "SELECT max(CAST(floor(unix_timestamp(CAST(substr(event_time, 1, 19) AS TIMESTAMP)) / 86400) AS BIGINT)) "
        "FROM events WHERE event_type IN ('view', 'cart', 'remove_from_cart', 'purchase')"
    ).collect()[0][0]
    statements = [st.replace("${last_day}", str(last_day)) for st in statements]
    *views, final = statements
    for s in views:
        spark.sql(s)
    result = spark.sql(final)
    result.write.mode("overwrite").partitionBy("split").parquet(a.output)
    query_s = time.perf_counter() - t1
    log(f"query + write: {query_s:.1f} s")

    # count what was written (not timed)
    rows = {r["split"]: r["count"] for r in spark.read.parquet(a.output).groupBy("split").count().collect()}
    log(f"rows: {rows}")
    res = {
        "rows": rows,
        "query_s": query_s,
        "session_s": session_s,
        "spark_version": spark.version,
        "pyspark_version": pyspark.__version__,
        "jvm_max_heap_mib": heap_mb,
        "master": a.master,
        "driver_memory": a.driver_memory,
        "shuffle_partitions": a.shuffle_partitions,
        "translations": translations,
    }
    spark.stop()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
