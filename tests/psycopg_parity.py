"""psycopg 3 through the proxy vs. directly: the same queries, text and binary results.

Usage: psycopg_parity.py DIRECT_DSN PROXY_DSN. Exits non-zero on any difference.
"""
import sys

import psycopg

SETUP = """
CREATE TABLE IF NOT EXISTS py_t (
    id int PRIMARY KEY, n numeric, f float8, t text, b bytea, ts timestamptz, d date,
    iv interval, j jsonb, a int[], u uuid, flag bool
);
TRUNCATE py_t;
INSERT INTO py_t SELECT g, g * 1.5, g / 3.0, 'row ' || g, decode(lpad(to_hex(g), 4, '0'), 'hex'),
       '2026-03-01 12:00:00+00'::timestamptz + g * interval '1 hour', '2026-03-01'::date + g,
       g * interval '90 seconds', jsonb_build_object('g', g, 'even', g % 2 = 0), ARRAY[g, g + 1, NULL],
       ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, g % 3 = 0
FROM generate_series(1, 300) g;
"""

QUERIES = [
    ("SELECT * FROM py_t ORDER BY id", None),
    ("SELECT * FROM py_t WHERE id = %s", (42,)),
    ("SELECT id, t FROM py_t WHERE t LIKE %s ORDER BY id", ("row 1%",)),
    ("SELECT count(*), sum(n), avg(f) FROM py_t", None),
    ("SELECT NULL::int, 'NaN'::numeric, '-Infinity'::float8, ''::text", None),
    ("SELECT %s::text, %s::int, %s::bytea", ("héllo ✓", -7, b"\x00\x01\xff")),
    ("SELECT generate_series(1, 5000) AS g", None),
]


def run(dsn, binary):
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'Europe/Berlin'")
        for sql, params in QUERIES:
            with conn.cursor(binary=binary) as cur:
                cur.execute(sql, params)
                desc = [(c.name, c.type_code) for c in cur.description]
                out.append((sql, desc, cur.fetchall(), cur.statusmessage))
        try:
            conn.execute("SELECT * FROM py_t WHERE id = 'x'")
        except psycopg.Error as e:
            out.append(("error", e.sqlstate, str(e)))
    return out


def main():
    direct, proxy = sys.argv[1], sys.argv[2]
    with psycopg.connect(direct, autocommit=True) as conn:
        conn.execute(SETUP)
    differences = 0
    compared = 0
    for binary in (False, True):
        a, b = run(direct, binary), run(proxy, binary)
        for x, y in zip(a, b):
            compared += 1
            # repr, not ==: Decimal('NaN') != Decimal('NaN').
            if repr(x) != repr(y):
                differences += 1
                print("DIFFERENCE (binary=%s):\n direct: %r\n proxy:  %r" % (binary, x, y))
        if len(a) != len(b):
            differences += 1
    print("psycopg: %d result sets compared (text and binary), %d differences" % (compared, differences))
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()
