//! The statement corpus of `tests/differential.rs` (included there with `#[path]`; not part
//! of `common`'s module tree, so other test binaries do not compile it).
//!
//! Rules for adding statements (each one runs against Postgres directly and through the proxy,
//! in separate databases cloned from one template, and the messages must match byte for byte):
//! - Deterministic only: no `now()`, `clock_timestamp()`, `pg_backend_pid()`,
//!   `current_database()`, client address/port, unseeded `random()`, temp tables (their schema
//!   name depends on the backend), or OIDs of objects the corpus creates in result *values*
//!   (their OIDs differ per side; RowDescription OIDs are normalized, values are not).
//! - Order every SELECT from a table.
//! - The sequence is one session: later statements may depend on earlier ones, including
//!   transaction state. Statements after a multi-statement entry must also make sense when
//!   that entry ran through the simple protocol (it always does, in both runs).

/// One corpus entry.
pub struct Stmt {
    pub sql: String,
    /// `Some`: run through the extended protocol with these text-format parameters, in both
    /// runs (text results in the text run). `None`: simple Query in the text run.
    pub params: Option<Vec<Option<String>>>,
    /// Data for each COPY FROM STDIN the statement triggers (missing: CopyFail).
    pub copy_in: Vec<Vec<u8>>,
    /// Several statements in one Query: simple protocol in both runs (the extended protocol
    /// cannot carry them).
    pub multi: bool,
}

fn s(sql: impl Into<String>) -> Stmt {
    Stmt {
        sql: sql.into(),
        params: None,
        copy_in: Vec::new(),
        multi: false,
    }
}

fn p(sql: &str, params: &[Option<&str>]) -> Stmt {
    Stmt {
        params: Some(params.iter().map(|p| p.map(str::to_string)).collect()),
        ..s(sql)
    }
}

fn m(sql: &str) -> Stmt {
    Stmt {
        multi: true,
        ..s(sql)
    }
}

fn copy(sql: &str, data: &[&[u8]]) -> Stmt {
    Stmt {
        copy_in: data.iter().map(|d| d.to_vec()).collect(),
        ..s(sql)
    }
}

/// Objects the corpus expects to exist already; cloned into both databases, so their OIDs
/// are identical on both sides.
pub const TEMPLATE_SQL: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE complex AS (r float8, i float8);
CREATE TYPE floatrange AS RANGE (subtype = float8);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE SEQUENCE seq_a START 100;
CREATE TABLE items (
    id serial PRIMARY KEY,
    sku text UNIQUE NOT NULL,
    name varchar(40),
    code char(5),
    qty int2 NOT NULL DEFAULT 0,
    weight numeric(10,3),
    price money,
    in_stock bool,
    mood mood,
    tags text[],
    meta jsonb,
    added timestamptz
);
INSERT INTO items (sku, name, code, qty, weight, price, in_stock, mood, tags, meta, added) VALUES
 ('A-1', 'anvil', 'AN', 3, 12.5, 19.99, true, 'happy', '{heavy,iron}', '{"color": "black"}', '2024-01-02 03:04:05+00'),
 ('B-2', 'bucket', 'BU', 10, 0.75, 4.5, true, 'ok', '{}', '{"color": "red", "sizes": [1, 2]}', '2023-12-31 23:59:59.999999+00'),
 ('C-3', 'crate', NULL, 0, NULL, NULL, false, 'sad', NULL, NULL, NULL),
 ('D-4', 'ünïcödé ✓', 'UN', 1, 1000000.001, -3.25, NULL, NULL, '{"a b","c,d",NULL}', '[]', 'infinity');
CREATE TABLE kinds (
    id int PRIMARY KEY,
    b bool, i2 int2, i4 int4, i8 int8, n numeric, f4 float4, f8 float8,
    t text, vc varchar(10), c char(3), by bytea, u uuid, j json, jb jsonb,
    ts timestamp, tstz timestamptz, d date, tm time, tmtz timetz, iv interval,
    ia int4[], ta text[], ip inet, cid cidr, mac macaddr, mo money, e mood, cx complex,
    r int4range, fr floatrange, p posint, bits bit(4), pt point
);
INSERT INTO kinds VALUES
 (1, true, -32768, 2147483647, -9223372036854775808, 'NaN', '-0', 'Infinity',
  'text', 'varchar', 'ab', '\x00ff7f80', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"k": [1, 2.50]}', '{"k": [1, 2.50]}', '2000-02-29 12:34:56.789', '2000-02-29 12:34:56.789+05:30',
  '1999-12-31', '23:59:59.999999', '01:02:03-08', '1 year 2 mons 3 days 04:05:06.5',
  '{{1,2},{3,NULL}}', '{"x","y z",NULL}', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03',
  '1234.56', 'happy', '(1.5,-2)', '[1,10)', '[0.5,1.5]', 7, B'1010', '(1.5,2)'),
 (2, false, 0, 0, 0, '-123456789012345678901234567890.0123456789', 3.4e38, 1e-300,
  '', '', '', '', '00000000-0000-0000-0000-000000000000', '[]', '{}', '-infinity', 'infinity',
  '4713-01-01 BC', '00:00', '00:00+00', '-1 days +02:03', '{}', '{}', '::1', '2001:db8::/32',
  '00:00:00:00:00:00', '-0.01', 'sad', '(,)', 'empty', '(,)', 1, B'0000', '(0,0)'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL);
CREATE TABLE accounts (
    id int PRIMARY KEY,
    owner text NOT NULL,
    balance numeric(12,2) NOT NULL CHECK (balance >= 0)
);
INSERT INTO accounts VALUES (1, 'alice', 100.00), (2, 'bob', 50.50), (3, 'carol', 0);
CREATE TABLE points (id int PRIMARY KEY, c complex, label text);
INSERT INTO points VALUES (1, '(1,2)', 'one'), (2, '(-0.5,NaN)', NULL), (3, NULL, 'three');
CREATE TABLE copy_target (a int, b text, c float8);
CREATE TABLE blobs (id int PRIMARY KEY, data bytea);
CREATE TABLE big (id int PRIMARY KEY, payload text);
CREATE VIEW rich AS SELECT owner, balance FROM accounts WHERE balance > 10;
CREATE FUNCTION add_one(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 + 1';
CREATE FUNCTION noisy(n int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'noisy called with %', n;
    IF n < 0 THEN
        RAISE EXCEPTION 'negative input: %', n USING ERRCODE = '22023', HINT = 'pass n >= 0';
    END IF;
    RETURN n * 2;
END $$;
"#;

/// Session settings, types and values.
fn types() -> Vec<Stmt> {
    vec![
        s("SET TimeZone = 'UTC'"),
        s("SET DateStyle = 'ISO, MDY'"),
        s("SET IntervalStyle = 'postgres'"),
        s("SHOW TimeZone"),
        s("SHOW DateStyle"),
        s("SHOW client_encoding"),
        s("SHOW standard_conforming_strings"),
        s("SHOW server_version"),
        s(""),
        s(";"),
        s("   -- only a comment"),
        s("SELECT 1"),
        s("SELECT NULL"),
        s("SELECT NULL::int AS n, NULL::text AS t, NULL::bool AS b"),
        s("SELECT 1 AS a, 'two' AS b, 3.0 AS c, 4e0 AS d"),
        s("SELECT true, false, NULL::bool, 'yes'::boolean, 't'::bool AND 'f'::bool"),
        s("SELECT 32767::int2, (-32768)::int2, 2147483647::int4, (-2147483648)::int4"),
        s("SELECT 9223372036854775807::int8, (-9223372036854775808)::int8, 0::int8"),
        s("SELECT 7 % 3, -7 / 2, 7::int8 * 3, 2 ^ 10, @ -5, 5 & 3, 5 | 3, 1 << 4"),
        s("SELECT 32768::int2"),
        s("SELECT 2147483647 + 1"),
        s("SELECT 'NaN'::numeric, 1.5::numeric(10,2), 123456789012345678901234567890.123456789::numeric"),
        s("SELECT 1::numeric / 3, 2::numeric ^ 200, round(2.5), round(-2.5::numeric, 0)"),
        s("SELECT 'Infinity'::numeric, '-Infinity'::numeric, 0.000000000000000000001::numeric(30,25)"),
        s("SELECT 12345.6::numeric(4,1)"),
        s("SELECT 'Infinity'::float8, '-Infinity'::float8, 'NaN'::float8, '-0'::float8"),
        s("SELECT 0.1::float4, 0.1::float8, 1e308::float8, 1.23456789012345678::float8, 3.4e38::float4, 1e-45::float4"),
        s("SELECT sqrt(2::float8), pi(), exp(1::float8), ln(10::float8)"),
        s("SELECT '1e400'::float8"),
        s("SET extra_float_digits = 3"),
        s("SELECT 0.1::float4, 0.1::float8, pi()"),
        s("SET extra_float_digits = 0"),
        s("SELECT 0.1::float4, 0.1::float8, pi()"),
        s("RESET extra_float_digits"),
        s("SELECT 'hello'::text, 'abc'::varchar(2), 'ab'::char(5), 'x'::\"char\", 'ünïcödé ✓', 'abc'::name"),
        s("SELECT ''::text, length('ab'::char(5)), 'ab'::char(5) || 'c', octet_length('ü')"),
        s("SELECT E'tab\\there\\nnewline', 'quote''s', U&'\\0041\\00e9'"),
        s("SELECT repeat('ab', 10), upper('straße'), lower('ÀB'), initcap('hello world')"),
        s("SELECT format('%s-%s-%L', 1, 'a', 'q''t'), concat_ws(',', 'a', NULL, 'c'), left('abcdef', -2)"),
        s("SELECT 'toolong'::varchar(3)"),
        s("SELECT 'toolong'::char(3), 'x'::varchar(3) || 'yyyy'"),
        s("SELECT chr(0)"),
        s("SELECT convert_from('\\xff'::bytea, 'UTF8')"),
        s("SELECT '2024-02-29 13:45:56.789012+02'::timestamptz, '2024-02-29 13:45:56.789012'::timestamp"),
        s("SELECT '2024-02-29'::date, '13:45:56.5'::time, '13:45:56+05:30'::timetz"),
        s("SELECT '1 year 2 months 3 days 04:05:06.789'::interval, '-1 day +02:00'::interval, '1.5 weeks'::interval"),
        s("SELECT 'infinity'::timestamptz, '-infinity'::date, 'epoch'::timestamp, '0001-01-01 BC'::date"),
        s("SELECT date '2024-01-31' + interval '1 month', timestamp '2024-03-10 12:00' - timestamp '2024-01-01'"),
        s("SELECT extract(epoch FROM timestamptz '2024-01-01 00:00:00+00'), date_trunc('month', timestamp '2024-05-17 10:00')"),
        s("SELECT to_char(timestamp '2024-05-17 10:11:12', 'YYYY-MM-DD HH24:MI:SS Day Month'), to_date('17.05.2024', 'DD.MM.YYYY')"),
        s("SELECT '2024-13-01'::date"),
        s("SELECT 'not a date'::date"),
        s("SELECT age(timestamp '2024-05-17', timestamp '2000-02-29'), justify_interval(interval '40 days 30 hours')"),
        s("SET TimeZone = 'America/New_York'"),
        s("SELECT timestamptz '2024-03-10 06:59:59+00', timestamptz '2024-03-10 07:00:00+00', '2024-07-01 12:00'::timestamptz"),
        s("SELECT ts, tstz, d, tm, tmtz, iv FROM kinds ORDER BY id"),
        s("SET DateStyle = 'SQL, DMY'"),
        s("SELECT ts, tstz, d FROM kinds ORDER BY id"),
        s("SET DateStyle = 'German'"),
        s("SELECT '2024-02-29 13:45:56.789'::timestamp, '2024-02-29'::date, '2024-02-29 01:02:03+00'::timestamptz"),
        s("SET DateStyle = 'Postgres, MDY'"),
        s("SELECT '2024-02-29 13:45:56.789'::timestamp, '2024-02-29'::date, '2024-02-29 01:02:03+00'::timestamptz"),
        s("SET IntervalStyle = 'iso_8601'"),
        s("SELECT '1 year 2 months 3 days 04:05:06.789'::interval, '-1 day +02:00'::interval, iv FROM kinds ORDER BY id"),
        s("SET IntervalStyle = 'sql_standard'"),
        s("SELECT '1 year 2 months 3 days 04:05:06.789'::interval, '-1 day +02:00'::interval"),
        s("SET IntervalStyle = 'postgres_verbose'"),
        s("SELECT '1 year 2 months 3 days 04:05:06.789'::interval, '-1 day -02:00'::interval"),
        s("SET TimeZone = 'Asia/Kolkata'"),
        s("SHOW TimeZone"),
        s("SELECT '2024-02-29 13:45:56+00'::timestamptz, tstz FROM kinds ORDER BY id"),
        s("SET TimeZone = 'UTC'"),
        s("SET DateStyle = 'ISO, MDY'"),
        s("SET IntervalStyle = 'postgres'"),
        s("SET bytea_output = 'hex'"),
        s("SELECT '\\xdeadbeef'::bytea, ''::bytea, decode('00ff10', 'hex'), 'abc \\153\\154\\155 \\052\\251\\124'::bytea"),
        s("SET bytea_output = 'escape'"),
        s("SELECT '\\xdeadbeef'::bytea, ''::bytea, decode('00ff10', 'hex'), 'abc \\153\\154\\155 \\052\\251\\124'::bytea, by FROM kinds ORDER BY id"),
        s("RESET bytea_output"),
        s("SELECT '\\x0g'::bytea"),
        s("SELECT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, '{A0EEBC99-9C0B4EF8-BB6D6BB9-BD380A11}'::uuid, md5('abc')::uuid"),
        s("SELECT 'nope'::uuid"),
        s(r#"SELECT '{"b": 2, "a": [1, 2.50, null, true], "c": {"d": "e"}}'::json, '{"b": 2, "a": [1, 2.50, null, true], "c": {"d": "e"}}'::jsonb"#),
        s(r#"SELECT '{"a":1}'::jsonb -> 'a', '{"a":{"b":[1,2]}}'::jsonb #> '{a,b,1}', '[1,2,3]'::jsonb @> '[2]', '{"a":"x"}'::json ->> 'a'"#),
        s("SELECT jsonb_build_object('k', 1, 'arr', ARRAY[1,2]), json_agg(x ORDER BY x) FROM generate_series(1,3) x"),
        s(r#"SELECT jsonb_pretty('{"a":[1,{"b":2}]}'), '"\u00e9"'::jsonb, '1e3'::json, '1e3'::jsonb"#),
        s("SELECT '{bad json'::jsonb"),
        s(r#"SELECT jsonb_path_query('{"a":[1,2,3]}', '$.a[*] ? (@ > 1)')"#),
        s("SELECT ARRAY[1,2,3], ARRAY[[1,2],[3,4]], ARRAY['a',NULL,'c'], '{}'::int[], ARRAY[NULL::int]"),
        s("SELECT '[0:2]={1,2,3}'::int[], '{{1,2},{3,NULL}}'::int8[], '{{{1},{2}},{{3},{4}}}'::int2[]"),
        s("SELECT ARRAY[1.5, NULL]::numeric[], ARRAY['2024-01-01'::date], ARRAY[true,false], ARRAY['1 day'::interval]"),
        s("SELECT array_agg(x ORDER BY x DESC) FROM generate_series(1,5) x"),
        s("SELECT (ARRAY[1,2,3])[2], array_length(ARRAY[[1,2],[3,4]], 2), array_dims('[0:2]={1,2,3}'::int[])"),
        s("SELECT unnest(ARRAY['x','y']) AS u ORDER BY u"),
        s(r#"SELECT ARRAY['with "quote"', 'with,comma', 'with space', '', 'NULL', E'back\\slash']"#),
        s("SELECT '{{1,2},{3}}'::int[]"),
        s("SELECT ARRAY[ROW(1,'a'), ROW(2,'b')], ARRAY['sad','happy']::mood[], ARRAY['(1,2)'::complex]"),
        s("SELECT 'happy'::mood, 'sad'::mood < 'happy'::mood, enum_range(NULL::mood), enum_first(NULL::mood)"),
        s("SELECT 'angry'::mood"),
        s("SELECT ROW(1, 'a', NULL, 2.5), (1.5, -2)::complex, ((1.5, -2)::complex).r"),
        s("SELECT c, label FROM points ORDER BY id"),
        s("SELECT p FROM points p ORDER BY id"),
        s("SELECT ROW(ROW(1,2), ARRAY[3,4]), (x, y) FROM (VALUES (1,'a'),(2,NULL)) v(x,y) ORDER BY x"),
        s("SELECT int4range(1, 10), '[1.5,2.5)'::numrange, '(,5]'::int4range, 'empty'::int8range"),
        s("SELECT tstzrange('2024-01-01', '2024-02-01', '[]'), daterange('2024-01-01','2024-01-31') * daterange('2024-01-15','2024-02-15')"),
        s("SELECT '[1,2]'::floatrange, '{[1,3), [5,7)}'::int4multirange, int4range(1,5) @> 3"),
        s("SELECT int4range(5,1)"),
        s("SELECT '192.168.1.5/24'::inet, '10.0.0.0/8'::cidr, '::1'::inet, '2001:db8::/32'::cidr, '08:00:2b:01:02:03'::macaddr"),
        s("SELECT '192.168.1.0/24'::inet >> '192.168.1.5'::inet, host('10.1.2.3/16'::inet), masklen('10.0.0.0/8'::cidr), '08:00:2b:01:02:03:04:05'::macaddr8"),
        s("SELECT '192.168.1.5/24'::cidr"),
        s("SELECT 12.34::money, '-$1,234.56'::money, 5::money * 3, '$1.00'::money / 3"),
        s("SELECT 'a fat cat sat'::tsvector, to_tsvector('english', 'The cats are running'), to_tsquery('english', 'cats & dogs')"),
        s("SELECT point(1,2), '((0,0),(1,1))'::box, circle '<(0,0),1>', '[(0,0),(1,1),(2,0)]'::path, lseg '[(0,0),(1,1)]'"),
        s("SELECT B'1010'::bit(4), B'101'::varbit, B'1010' & B'0110', 'int4'::regtype, 'pg_class'::regclass, 'int4'::regtype::oid"),
        s("SELECT * FROM kinds ORDER BY id"),
        s("SELECT * FROM items ORDER BY id"),
        s("SELECT -1::posint"),
        s("SELECT (-1)::posint"),
        s("SELECT setseed(0.25)"),
        s("SELECT random(), random()"),
        s("SELECT nextval('seq_a'), nextval('seq_a'), currval('seq_a')"),
    ]
}

/// DDL and DML, including constraint errors.
fn ddl_dml() -> Vec<Stmt> {
    vec![
        s("CREATE TABLE t1 (id int PRIMARY KEY, name text NOT NULL, score numeric(6,2) CHECK (score >= 0), tag mood DEFAULT 'ok', created timestamptz DEFAULT '2024-01-01 00:00:00+00')"),
        s("CREATE TABLE t1 (x int)"),
        s("CREATE TABLE IF NOT EXISTS t1 (x int)"),
        s("CREATE INDEX t1_name_idx ON t1 (name)"),
        s("CREATE UNIQUE INDEX t1_lower_name_uq ON t1 (lower(name))"),
        s("ALTER TABLE t1 ADD COLUMN note text"),
        s("ALTER TABLE t1 ALTER COLUMN note SET DEFAULT 'none'"),
        s("ALTER TABLE t1 RENAME COLUMN note TO remark"),
        s("ALTER TABLE t1 DROP COLUMN nonexistent"),
        s("ALTER TABLE t1 ADD CONSTRAINT t1_score_max CHECK (score < 1000)"),
        s("CREATE VIEW t1_view AS SELECT id, upper(name) AS uname FROM t1"),
        s("CREATE FUNCTION t1_total() RETURNS numeric LANGUAGE sql AS $$ SELECT coalesce(sum(score), 0) FROM t1 $$"),
        s("CREATE OR REPLACE FUNCTION t1_raise(msg text) RETURNS void LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'got %', msg; END $$"),
        s("CREATE TYPE t_status AS ENUM ('new', 'done')"),
        s("SELECT 'new'::t_status, 'done'::t_status"),
        s("CREATE TABLE t2 (id serial PRIMARY KEY, t1_id int REFERENCES t1(id) ON DELETE CASCADE, body text, status t_status DEFAULT 'new')"),
        s("CREATE SEQUENCE t_seq START 5 INCREMENT 5"),
        s("SELECT nextval('t_seq'), nextval('t_seq'), currval('t_seq')"),
        s("COMMENT ON TABLE t1 IS 'test table'"),
        s("INSERT INTO t1 (id, name, score) VALUES (1, 'alice', 10.5), (2, 'bob', 20) RETURNING *"),
        s("INSERT INTO t1 (id, name, score) VALUES (1, 'dup', 1)"),
        s("INSERT INTO t1 (id, name, score) VALUES (3, 'ALICE', 1)"),
        s("INSERT INTO t1 (id, name, score) VALUES (3, 'carol', -1)"),
        s("INSERT INTO t1 (id, name) VALUES (4, NULL)"),
        s("INSERT INTO t1 (id, name, score) VALUES (5, 'eve', 5000)"),
        s("INSERT INTO t2 (t1_id, body) VALUES (99, 'orphan')"),
        s("INSERT INTO t2 (t1_id, body) VALUES (1, 'first'), (1, 'second'), (2, 'third') RETURNING id, t1_id, body, status"),
        s("UPDATE t1 SET score = score * 2 WHERE id = 1 RETURNING id, score, tag, remark"),
        s("UPDATE t1 SET name = 'zed' WHERE false"),
        s("UPDATE t2 SET status = 'done' WHERE body = 'second' RETURNING *"),
        s("SELECT * FROM t2 ORDER BY id"),
        s("DELETE FROM t1 WHERE id = 2 RETURNING name"),
        s("SELECT * FROM t2 ORDER BY id"),
        s("INSERT INTO t1 (id, name, score) VALUES (1, 'alice2', 1) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name RETURNING id, name"),
        s("INSERT INTO t1 (id, name, score) VALUES (1, 'ignored', 1) ON CONFLICT DO NOTHING"),
        s("INSERT INTO t1 SELECT g, 'gen' || g, g FROM generate_series(10, 20) g"),
        s("SELECT * FROM t1 ORDER BY id"),
        s("SELECT * FROM t1_view ORDER BY id"),
        s("SELECT t1_total()"),
        s("SELECT t1_raise('hi')"),
        s("WITH ins AS (INSERT INTO t2 (t1_id, body) VALUES (10, 'a'), (11, 'b') RETURNING id, body) SELECT * FROM ins ORDER BY id"),
        s("SELECT count(*), sum(id), avg(score), min(name), max(created) FROM t1"),
        s("SELECT id, name, row_number() OVER (ORDER BY score DESC, id), rank() OVER (PARTITION BY tag ORDER BY id) FROM t1 ORDER BY id"),
        s("SELECT * FROM t1 WHERE name LIKE 'gen1%' ORDER BY id"),
        s("SELECT name FROM t1 WHERE name ILIKE 'ALI%' ORDER BY id"),
        s("SELECT t1.name, t2.body FROM t1 JOIN t2 ON t2.t1_id = t1.id ORDER BY t2.id"),
        s("MERGE INTO t1 USING (VALUES (1, 'merged'), (30, 'new')) AS v(id, name) ON t1.id = v.id WHEN MATCHED THEN UPDATE SET name = v.name WHEN NOT MATCHED THEN INSERT (id, name, score) VALUES (v.id, v.name, 0)"),
        s("SELECT id, name FROM t1 WHERE id IN (1, 30) ORDER BY id"),
        s("UPDATE items SET qty = qty + 1 WHERE sku = 'A-1' RETURNING qty, name, tags"),
        s("INSERT INTO items (sku, name, qty) VALUES ('A-1', 'dup', 1)"),
        s("INSERT INTO items (sku, name, qty) VALUES ('E-5', 'eel', 5) RETURNING id, sku, qty, price"),
        s("UPDATE accounts SET balance = balance - 200 WHERE id = 1"),
        s("SELECT * FROM rich ORDER BY owner"),
        s("SELECT add_one(41), noisy(2)"),
        s("SELECT noisy(-1)"),
        s("ALTER TABLE t2 ALTER COLUMN body TYPE varchar(10)"),
        s("INSERT INTO t2 (t1_id, body) VALUES (1, 'much too long for ten')"),
        s("CREATE MATERIALIZED VIEW t1_mv AS SELECT tag, count(*) AS n FROM t1 GROUP BY tag"),
        s("REFRESH MATERIALIZED VIEW t1_mv"),
        s("SELECT * FROM t1_mv ORDER BY tag"),
        s("CREATE FUNCTION t2_trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'trigger % on %', TG_OP, TG_TABLE_NAME; RETURN NEW; END $$"),
        s("CREATE TRIGGER t2_notice BEFORE INSERT ON t2 FOR EACH ROW EXECUTE FUNCTION t2_trg()"),
        s("INSERT INTO t2 (t1_id, body) VALUES (1, 'trig') RETURNING body"),
        s("PREPARE sq(int) AS SELECT $1 + 1 AS next"),
        s("EXECUTE sq(41)"),
        s("DEALLOCATE sq"),
        s("EXECUTE sq(1)"),
        s("EXPLAIN (COSTS OFF) SELECT * FROM t1 WHERE id = 1"),
        s("DROP VIEW t1_view"),
        s("DROP TABLE nope"),
        s("DROP TABLE IF EXISTS nope"),
        s("DROP MATERIALIZED VIEW t1_mv"),
        s("TRUNCATE t2"),
        s("SELECT count(*) FROM t2"),
        s("DROP TABLE t2"),
        s("DROP TYPE t_status"),
    ]
}

/// Syntax and runtime errors outside transactions.
fn errors() -> Vec<Stmt> {
    vec![
        s("SELECT nosuchcol FROM t1"),
        s("SELECT nme FROM t1"),
        s("SELECT * FROM nosuchtable"),
        s("SELECT 1 +"),
        s("SELEC 1"),
        s("SELECT 'unterminated"),
        s("SELECT abs('x'::text)"),
        s("SELECT 'abc'::int"),
        s("SELECT ''::int"),
        s("SELECT 1 / 0"),
        s("SELECT 1.0 / 0"),
        s("SELECT 0.0::float8 / 0"),
        s("SELECT (SELECT x FROM generate_series(1, 2) x)"),
        s("SELECT * FROM t1 WHERE id = 'abc'"),
        s("SELECT id FROM t1 GROUP BY name"),
        s("SELECT 1 FROM t1 t JOIN t1 t ON true"),
        s("CREATE TABLE bad (id int PRIMARY KEY, id int)"),
        s("INSERT INTO accounts (id, owner, balance) VALUES (9, 'x')"),
        s("INSERT INTO accounts (id, owner) VALUES (9, 'x')"),
        s("SELECT pg_sleep(0)"),
    ]
}

/// Transactions, savepoints, failed-transaction state, cursors.
fn transactions() -> Vec<Stmt> {
    vec![
        s("BEGIN"),
        s("INSERT INTO t1 (id, name, score) VALUES (100, 'tx', 1)"),
        s("SAVEPOINT sp1"),
        s("INSERT INTO t1 (id, name, score) VALUES (100, 'dup', 1)"),
        s("SELECT 1"),
        s("ROLLBACK TO SAVEPOINT sp1"),
        s("SELECT name FROM t1 WHERE id = 100"),
        s("SAVEPOINT sp2"),
        s("UPDATE t1 SET name = 'tx2' WHERE id = 100"),
        s("RELEASE SAVEPOINT sp2"),
        s("COMMIT"),
        s("SELECT name FROM t1 WHERE id = 100"),
        s("BEGIN"),
        s("SELECT 1 / 0"),
        s("SELECT 2"),
        s("SAVEPOINT too_late"),
        s("COMMIT"),
        s("BEGIN ISOLATION LEVEL REPEATABLE READ"),
        s("SHOW transaction_isolation"),
        s("ROLLBACK"),
        s("COMMIT"),
        s("ROLLBACK"),
        s("BEGIN"),
        s("BEGIN"),
        s("ROLLBACK"),
        s("RELEASE SAVEPOINT nope"),
        s("START TRANSACTION READ ONLY"),
        s("INSERT INTO t1 (id, name, score) VALUES (101, 'ro', 1)"),
        s("ROLLBACK"),
        s("BEGIN"),
        s("SET LOCAL TimeZone = 'Europe/Paris'"),
        s("SELECT '2024-06-01 12:00:00+00'::timestamptz"),
        s("COMMIT"),
        s("SHOW TimeZone"),
        s("BEGIN"),
        s("DECLARE c CURSOR FOR SELECT g, g * g AS sq FROM generate_series(1, 10) g"),
        s("FETCH 3 FROM c"),
        s("MOVE 2 IN c"),
        s("FETCH ALL FROM c"),
        s("CLOSE c"),
        s("COMMIT"),
        s("BEGIN"),
        s("DELETE FROM t1 WHERE id >= 10"),
        s("ROLLBACK"),
        s("SELECT count(*) FROM t1"),
        s("BEGIN"),
        s("UPDATE accounts SET balance = balance + 1 WHERE id = 2 RETURNING balance"),
        s("SAVEPOINT a"),
        s("UPDATE accounts SET balance = -5 WHERE id = 2"),
        s("ROLLBACK TO a"),
        s("SAVEPOINT b"),
        s("SELECT 1 / 0"),
        s("ROLLBACK TO b"),
        s("RELEASE a"),
        s("COMMIT"),
        s("SELECT * FROM accounts ORDER BY id"),
    ]
}

/// Multi-statement queries, notices, SET/SHOW, LISTEN/NOTIFY.
fn session() -> Vec<Stmt> {
    vec![
        m("SELECT 1; SELECT 2"),
        m("SELECT 1 AS a; SELECT 1 / 0; SELECT 3"),
        m("INSERT INTO t1 (id, name, score) VALUES (200, 'm', 1); UPDATE t1 SET score = 2 WHERE id = 200; DELETE FROM t1 WHERE id = 200 RETURNING score"),
        m("BEGIN; INSERT INTO t1 (id, name, score) VALUES (201, 'mt', 1); COMMIT"),
        m("BEGIN; SELECT 1 / 0; COMMIT"),
        s("ROLLBACK"),
        m("SET TimeZone = 'Europe/Berlin'; SHOW TimeZone; SELECT '2024-01-01 00:00:00+00'::timestamptz"),
        m(";;SELECT 1;;"),
        m("CREATE TABLE ms (a int); INSERT INTO ms VALUES (1), (2); SELECT * FROM ms ORDER BY a; DROP TABLE ms"),
        m("SELECT 'a'; ; SELECT 'b'"),
        m("BEGIN; SELECT 1; SAVEPOINT s; SELECT 1/0"),
        s("ROLLBACK TO s"),
        s("COMMIT"),
        s("DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$"),
        s("DO $$ BEGIN RAISE WARNING 'careful' USING DETAIL = 'some detail', HINT = 'a hint'; END $$"),
        s("DO $$ BEGIN RAISE EXCEPTION 'custom failure' USING ERRCODE = 'P0001', DETAIL = 'd', HINT = 'h'; END $$"),
        s("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '22012', MESSAGE = 'fake div'; END $$"),
        s("DO $$ BEGIN RAISE INFO 'info msg'; RAISE LOG 'log msg'; RAISE DEBUG 'debug msg'; END $$"),
        s("DO $$ DECLARE r record; BEGIN FOR r IN SELECT id FROM t1 ORDER BY id LIMIT 3 LOOP RAISE NOTICE 'row %', r.id; END LOOP; END $$"),
        s("DO $$ BEGIN PERFORM 1 / 0; END $$"),
        s("SET client_min_messages = 'warning'"),
        s("DO $$ BEGIN RAISE NOTICE 'suppressed'; RAISE WARNING 'shown'; END $$"),
        s("RESET client_min_messages"),
        s("SET standard_conforming_strings = off"),
        s("SELECT 'a\\\\b', 'c\\nd'"),
        s("RESET standard_conforming_strings"),
        s("SET application_name = 'diff-test'"),
        s("SHOW application_name"),
        s("SET search_path = public, pg_catalog"),
        s("SHOW search_path"),
        s("SET statement_timeout = '5s'"),
        s("SHOW statement_timeout"),
        s("RESET statement_timeout"),
        s("SET work_mem = '64MB'"),
        s("SHOW work_mem"),
        s("SET myapp.flag = 'on'"),
        s("SHOW myapp.flag"),
        s("SET nosuchparam = 1"),
        s("SHOW nosuchparam"),
        s("SELECT set_config('TimeZone', 'Pacific/Auckland', false), current_setting('DateStyle')"),
        s("SET DateStyle = 'SQL, DMY'"),
        s("RESET ALL"),
        s("SHOW TimeZone"),
        s("SET TimeZone = 'UTC'"),
        s("LISTEN chan1"),
        s("NOTIFY chan1, 'payload one'"),
        s("SELECT pg_notify('chan1', 'via function')"),
        s("BEGIN"),
        s("NOTIFY chan1, 'in tx'"),
        s("NOTIFY chan1, 'in tx'"),
        s("NOTIFY chan1, 'second in tx'"),
        s("COMMIT"),
        s("LISTEN \"Chan Two\""),
        s("NOTIFY \"Chan Two\""),
        s("UNLISTEN chan1"),
        s("NOTIFY chan1, 'unheard'"),
        s("UNLISTEN *"),
    ]
}

/// COPY, parameters, large values and results.
fn copy_params_large() -> Vec<Stmt> {
    let csv_rows: String = (1..=10_000)
        .map(|i| format!("{i},row {i},{}\n", f64::from(i) / 8.0))
        .collect();
    let one_mb = "x".repeat(1 << 20);
    vec![
        s("COPY (SELECT g, 'v' || g, g / 2.0 FROM generate_series(1, 5) g) TO STDOUT"),
        s("COPY (SELECT id, name, score FROM t1 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)"),
        s("COPY (SELECT * FROM kinds ORDER BY id) TO STDOUT"),
        s("COPY (SELECT * FROM kinds ORDER BY id) TO STDOUT WITH (FORMAT binary)"),
        copy("COPY copy_target FROM STDIN", &[b"1\tone\t1.5\n2\t\\N\t-0\n"]),
        copy(
            "COPY copy_target FROM STDIN WITH (FORMAT csv)",
            &[b"3,three,3.25\n4,\"quoted, comma\",\n"],
        ),
        copy("COPY copy_target FROM STDIN", &[]),
        copy("COPY copy_target FROM STDIN", &[b"x\ty\tz\n"]),
        copy("COPY copy_target (a, b) FROM STDIN", &[b"5\tfive\textra\n"]),
        copy("COPY nosuch FROM STDIN", &[b"1\n"]),
        copy("COPY copy_target FROM STDIN WITH (FORMAT csv)", &[csv_rows.as_bytes()]),
        s("SELECT count(*), sum(a), max(b), sum(c) FROM copy_target"),
        s("SELECT * FROM copy_target WHERE a <= 5 ORDER BY a"),
        s("COPY (SELECT g FROM generate_series(1, 100000) g) TO STDOUT"),
        p("SELECT $1::int + $2::int AS sum", &[Some("40"), Some("2")]),
        p("SELECT $1::text IS NULL AS isnull, $2::text AS t", &[None, Some("x")]),
        p("SELECT $1::int", &[Some("abc")]),
        p("SELECT $1::int", &[]),
        p("SELECT $1", &[Some("untyped")]),
        p(
            "INSERT INTO t1 (id, name, score) VALUES ($1, $2, $3) RETURNING *",
            &[Some("300"), Some("param"), Some("1.25")],
        ),
        p("SELECT id, name FROM t1 WHERE name = $1 ORDER BY id", &[Some("param")]),
        p("SELECT $1::jsonb -> 'a'", &[Some(r#"{"a": [1, 2]}"#)]),
        p("SELECT $1::int[], $2::text[]", &[Some("{1,2,NULL}"), Some(r#"{"a b",c}"#)]),
        p(
            "SELECT $1::timestamptz, $2::date, $3::interval",
            &[Some("2024-05-05 05:05:05+03"), Some("2024-05-05"), Some("1 day 2 hours")],
        ),
        p("SELECT $1::bytea, $2::uuid", &[Some("\\x00ff"), Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")]),
        p("SELECT $1::mood, $2::numeric, $3::float8", &[Some("ok"), Some("NaN"), Some("-0")]),
        p("SELECT length($1::text), md5($1::text)", &[Some(&one_mb)]),
        p("SELECT $1::text AS echoed", &[Some(&one_mb)]),
        p("SELECT * FROM accounts WHERE id = $1", &[Some("1")]),
        s("SELECT repeat('x', 1048576) AS big_text"),
        s("SELECT decode(repeat('ab', 5242880), 'hex') AS big_bytea"),
        s("INSERT INTO blobs VALUES (1, decode(repeat('0123456789abcdef', 655360), 'hex')) RETURNING id, length(data)"),
        s("SELECT data FROM blobs WHERE id = 1"),
        s("SELECT g, g * 2 AS dbl, 'row ' || g AS label FROM generate_series(1, 100000) g"),
        s("SELECT count(*) FROM generate_series(1, 100000)"),
        s("INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 20000) g"),
        s("SELECT * FROM big ORDER BY id"),
        s("SELECT string_agg(md5(g::text), '' ORDER BY g) FROM generate_series(1, 40000) g"),
        s("SELECT 'done'"),
    ]
}

/// The whole corpus, in order.
pub fn corpus() -> Vec<Stmt> {
    let mut all = types();
    all.extend(ddl_dml());
    all.extend(errors());
    all.extend(transactions());
    all.extend(session());
    all.extend(copy_params_large());
    all
}
