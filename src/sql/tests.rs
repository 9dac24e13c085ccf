//! Table-driven classification cases, shape sharing, cache bounds and generated input.

use super::*;

use StatementKind as K;

const L: fn(usize) -> KeyValue = KeyValue::Literal;
const P: fn(u16) -> KeyValue = KeyValue::Param;
const N: fn(usize) -> KeyValue = KeyValue::NegatedLiteral;

/// Expected text predicate: column, operator name, negated, pattern.
type Pred = (&'static str, &'static str, bool, KeyValue);

struct Case {
    sql: &'static str,
    kind: StatementKind,
    tables: Option<Vec<&'static str>>,
    point: Option<(&'static str, &'static str, Vec<KeyValue>)>,
    preds: Vec<Pred>,
    flags: &'static str,
    not_flags: &'static str,
}

fn c(sql: &'static str, kind: StatementKind) -> Case {
    Case {
        sql,
        kind,
        tables: None,
        point: None,
        preds: Vec::new(),
        flags: "",
        not_flags: "",
    }
}

impl Case {
    fn tables(mut self, t: &[&'static str]) -> Self {
        self.tables = Some(t.to_vec());
        self
    }
    fn point(mut self, table: &'static str, col: &'static str, keys: &[KeyValue]) -> Self {
        self.point = Some((table, col, keys.to_vec()));
        self
    }
    fn pred(mut self, col: &'static str, op: &'static str, negated: bool, k: KeyValue) -> Self {
        self.preds.push((col, op, negated, k));
        self
    }
    /// Space-separated flags that must be set.
    fn flags(mut self, f: &'static str) -> Self {
        self.flags = f;
        self
    }
    /// Space-separated flags that must not be set.
    fn not(mut self, f: &'static str) -> Self {
        self.not_flags = f;
        self
    }
}

fn flag(f: &ShapeFlags, name: &str) -> bool {
    match name {
        "volatile" => f.has_volatile_functions,
        "unknown_fn" => f.has_unknown_functions,
        "aggregate" => f.has_aggregate,
        "window" => f.has_window,
        "locking" => f.has_locking_clause,
        "cte" => f.has_cte,
        "writing_cte" => f.has_writing_cte,
        "subquery" => f.has_subquery,
        "join" => f.has_join,
        "set_op" => f.has_set_operation,
        "group_by" => f.has_group_by,
        "having" => f.has_having,
        "distinct" => f.has_distinct,
        "distinct_on" => f.has_distinct_on,
        "order_by" => f.has_order_by,
        "limit" => f.has_limit,
        "offset" => f.has_offset,
        "into" => f.has_select_into,
        "table_fn" => f.has_table_function,
        "returning" => f.has_returning,
        "or" => f.where_has_or,
        "other_conj" => f.where_has_other_conjuncts,
        "no_lit_keys" => f.literal_keys_unavailable,
        other => panic!("unknown flag {other}"),
    }
}

fn op_name(op: &TextOp) -> &'static str {
    match op {
        TextOp::Like => "like",
        TextOp::ILike => "ilike",
        TextOp::Regex => "regex",
        TextOp::RegexI => "regexi",
        TextOp::FullText(_) => "fts",
    }
}

fn table_name(t: &TableRef) -> String {
    t.to_string()
}

const SET: fn(&str, bool) -> StatementKind = |name, local| {
    K::Set(SetCommand::Set {
        name: name.into(),
        local,
    })
};

fn txn(t: TxnControl) -> StatementKind {
    K::Transaction(t)
}

fn other(o: OtherCommand) -> StatementKind {
    K::Other(o)
}

fn cases() -> Vec<Case> {
    use TxnControl as T;
    vec![
        // --- pgbench ---
        c("SELECT abalance FROM pgbench_accounts WHERE aid = 1234;", K::Read)
            .tables(&["pgbench_accounts"])
            .point("pgbench_accounts", "aid", &[L(0)]),
        c("UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 5;", K::Write)
            .tables(&["pgbench_accounts"]),
        c("UPDATE pgbench_tellers SET tbalance = tbalance + 42 WHERE tid = 7;", K::Write)
            .tables(&["pgbench_tellers"]),
        c("UPDATE pgbench_branches SET bbalance = bbalance + 42 WHERE bid = 1;", K::Write)
            .tables(&["pgbench_branches"]),
        c(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 5, 42, CURRENT_TIMESTAMP);",
            K::Write,
        )
        .tables(&["pgbench_history"])
        .flags("volatile"),
        c("SELECT abalance FROM pgbench_accounts WHERE aid = $1", K::Read)
            .point("pgbench_accounts", "aid", &[P(1)]),
        c("BEGIN;", txn(T::Begin)),
        c("END;", txn(T::Commit)),
        // --- point reads ---
        c("select * from t where id = 42", K::Read).point("t", "id", &[L(0)]),
        c("SELECT * FROM T WHERE ID = 42", K::Read).point("t", "id", &[L(0)]),
        c("select * from t where 42 = id", K::Read).point("t", "id", &[L(0)]),
        c("select * from t where (id = 42)", K::Read).point("t", "id", &[L(0)]),
        c("select * from t where ((id) = (42))", K::Read).point("t", "id", &[L(0)]),
        c("select t.* from t where t.id = 'k'", K::Read).point("t", "id", &[L(0)]),
        c("select a.x, a.y as z from t a where a.id = $1", K::Read).point("t", "id", &[P(1)]),
        c("select * from t as a where id = $1", K::Read).point("t", "id", &[P(1)]),
        c("select * from s.t where s.t.id = 1", K::Read)
            .tables(&["s.t"])
            .point("s.t", "id", &[L(0)]),
        c("select * from public.users where id = $1 limit 1", K::Read)
            .point("public.users", "id", &[P(1)])
            .flags("limit"),
        c("select * from t where id = $2::int", K::Read).point("t", "id", &[P(2)]),
        c("select * from t where id = '42'::bigint", K::Read).point("t", "id", &[L(0)]),
        c("select * from t where id = cast($1 as bigint)", K::Read).point("t", "id", &[P(1)]),
        c("select * from t where id = -5", K::Read).point("t", "id", &[N(0)]),
        c("select * from t where id in (1, 2, 3)", K::Read).point("t", "id", &[L(0), L(1), L(2)]),
        c("select * from t where id in ($1, $2)", K::Read).point("t", "id", &[P(1), P(2)]),
        c("select * from t where id in (1)", K::Read).point("t", "id", &[L(0)]),
        c("select name from t where id = $1 and 1 = 1", K::Read).flags("other_conj"),
        c("select * from t where \"Id\" = 1", K::Read).point("t", "Id", &[L(0)]),
        c("select * from \"Users\" where id = 1", K::Read)
            .tables(&["Users"])
            .point("Users", "id", &[L(0)]),
        c("select * from t where id = E'\\x41'", K::Read).point("t", "id", &[L(0)]),
        c("select * from t where id = $$k$$", K::Read).point("t", "id", &[L(0)]),
        c("select * from t where id = U&'\\0041'", K::Read).point("t", "id", &[L(0)]),
        c("select * from t where id = 0x1F", K::Read).point("t", "id", &[L(0)]),
        c("select * from t where id = 1_000", K::Read).point("t", "id", &[L(0)]),
        c("select /* hint */ * from t -- trailing\n where id = 1", K::Read)
            .point("t", "id", &[L(0)]),
        c("select from t where id = 1", K::Read).point("t", "id", &[L(0)]),
        c("select * from t where id = $1 and extra = $2", K::Read).flags("other_conj"),
        // --- not point reads ---
        // The database part may name another database: Postgres errors then.
        c("select * from db.s.t where id = 1", K::Read).tables(&["s.t"]),
        c("select * from t where id = 1 for update", K::Read).flags("locking"),
        c("select * from t where id = 1 for share", K::Read).flags("locking"),
        c("select * from t where id = random()", K::Read).flags("volatile"),
        c("select now(), * from t where id = 1", K::Read).flags("volatile"),
        c("select * from t where id = 1 and now() > x", K::Read).flags("volatile other_conj"),
        c("select nextval('s')", K::Read).flags("volatile"),
        c("select setval('s', 5)", K::Read).flags("volatile"),
        c("select clock_timestamp()", K::Read).flags("volatile"),
        c("select txid_current()", K::Read).flags("volatile"),
        c("select pg_sleep(1)", K::Read).flags("volatile"),
        c("select gen_random_uuid()", K::Read).flags("volatile"),
        c("select * from t where id = my_func(1)", K::Read).flags("unknown_fn"),
        c("select lower(name) from t where id = 1", K::Read).not("unknown_fn volatile"),
        c("select * from t join u on t.id = u.tid where t.id = 1", K::Read)
            .tables(&["t", "u"])
            .flags("join"),
        c("select * from t, u where t.id = 1", K::Read).flags("join"),
        c("select * from t where id = (select max(id) from u)", K::Read)
            .tables(&["t", "u"])
            .flags("subquery aggregate"),
        c("select * from t where id in (select tid from u)", K::Read).flags("subquery"),
        c("select * from t where exists (select 1 from u)", K::Read).flags("subquery"),
        c("select * from (select * from t) s where id = 1", K::Read).flags("subquery"),
        c("with x as (select * from t) select * from x where id = 1", K::Read)
            .tables(&["t"])
            .flags("cte"),
        c("select * from t where id = 1 union select * from t where id = 2", K::Read)
            .flags("set_op"),
        c("select id from t where id = 1 group by id", K::Read).flags("group_by"),
        c("select id from t where id = 1 group by id having count(*) > 1", K::Read)
            .flags("group_by having aggregate"),
        c("select count(*) from t where id = 1", K::Read).flags("aggregate"),
        c("select row_number() over () from t where id = 1", K::Read).flags("window"),
        c("select distinct on (a) * from t where id = 1", K::Read).flags("distinct distinct_on"),
        c("select distinct a from t where id = 1", K::Read).flags("distinct"),
        c("select * from t where id = 1 order by id", K::Read)
            .flags("order_by")
            .point("t", "id", &[L(0)]),
        c("select * from t where id in (1, 2) order by t.id desc", K::Read)
            .flags("order_by")
            .point("t", "id", &[L(0), L(1)]),
        c("select * from t where id = 1 order by name", K::Read).flags("order_by"),
        c("select name as id from t where id = 1 order by id", K::Read).flags("order_by"),
        c("select * from t where id = 1 order by id using <", K::Read).flags("order_by"),
        c("select * from t where id = 1 order by 1", K::Read).flags("order_by"),
        c("select * from t where id = 1 order by id, name", K::Read).flags("order_by"),
        c("select * from t where id = 1 order by lower(id)", K::Read).flags("order_by"),
        c("select * from t where id = 1 offset 1", K::Read).flags("offset"),
        c("select * from t where id = 1 or id = 2", K::Read).flags("or other_conj"),
        c("select * from t where id = 1 and name = 'x'", K::Read).flags("other_conj"),
        c("select * into u from t where id = 1", K::Write).flags("into"),
        c("select * from t where id = other_id", K::Read),
        c("select * from t where id > 1", K::Read).flags("other_conj"),
        c("select * from t where id <> 1", K::Read),
        c("select * from t where id not in (1, 2)", K::Read),
        c("select * from t where id in (1, $1::int)", K::Read),
        c("select * from generate_series(1, 3) g where g = 1", K::Read).flags("table_fn"),
        c("select * from f(1) where id = 1", K::Read).flags("table_fn unknown_fn"),
        c("select * from t where id = 1; select 2", K::Multi),
        c("select id + 1 from t where id = 1", K::Read),
        c("select * from t x(a, b) where a = 1", K::Read),
        c("select * from t where id = $1 fetch first 1 rows only", K::Read).flags("limit"),
        c("select * from t a where t.id = 1", K::Read),
        c("select * from t where id = - $1", K::Read),
        // --- text predicates ---
        c("select * from t where title like 'foo%'", K::Read).pred("title", "like", false, L(0)),
        c("select * from t where title ilike $1", K::Read).pred("title", "ilike", false, P(1)),
        c("select * from t where title not like 'x' escape '!'", K::Read)
            .pred("title", "like", true, L(0)),
        c("select * from t where title not ilike 'x'", K::Read).pred("title", "ilike", true, L(0)),
        c("select * from t where title ~ '^a'", K::Read).pred("title", "regex", false, L(0)),
        c("select * from t where title ~* 'a'", K::Read).pred("title", "regexi", false, L(0)),
        c("select * from t where title !~ 'a'", K::Read).pred("title", "regex", true, L(0)),
        c("select * from t where title !~* 'a'", K::Read).pred("title", "regexi", true, L(0)),
        c("select * from t where title ~~ 'a%'", K::Read).pred("title", "like", false, L(0)),
        c("select * from t where title !~~* 'a%'", K::Read).pred("title", "ilike", true, L(0)),
        c("select * from t where t.title like $1::text", K::Read).pred("title", "like", false, P(1)),
        c(
            "select id from docs where to_tsvector('english', body) @@ to_tsquery('english', 'cat & dog')",
            K::Read,
        )
        .pred("body", "fts", false, L(2)),
        c("select id from docs where tsv @@ plainto_tsquery($1)", K::Read)
            .pred("tsv", "fts", false, P(1)),
        c("select id from docs where phraseto_tsquery('a b') @@ tsv", K::Read)
            .pred("tsv", "fts", false, L(0)),
        c("select id from docs where tsv @@ websearch_to_tsquery('simple', $1)", K::Read)
            .pred("tsv", "fts", false, P(1)),
        c("select * from t where a like 'x%' and b ~ 'y' and c = 5 order by d limit 10", K::Read)
            .pred("a", "like", false, L(0))
            .pred("b", "regex", false, L(1))
            .flags("other_conj order_by limit"),
        c("select * from t where a like 'x%' or b like 'y%'", K::Read).flags("or"),
        c("select * from t join u on t.id = u.id where a like 'x'", K::Read).flags("join"),
        c("select * from t where lower(a) like 'x'", K::Read).flags("other_conj"),
        c("select * from t where a like b", K::Read).flags("other_conj"),
        c("select * from t where (a like 'x%') and (b ilike 'y')", K::Read)
            .pred("a", "like", false, L(0))
            .pred("b", "ilike", false, L(1)),
        c("select * from t where tsv @@ my_query('x')", K::Read).flags("unknown_fn other_conj"),
        // --- writes ---
        c("insert into t (a) values (1) returning id", K::Write).flags("returning"),
        c("insert into t select * from u", K::Write).tables(&["t", "u"]),
        c("insert into t values (1) on conflict (id) do update set a = excluded.a", K::Write),
        c("update t set a = 1 from u where t.id = u.id", K::Write)
            .tables(&["t", "u"])
            .flags("join"),
        c("delete from t where id = 1", K::Write).tables(&["t"]),
        // sqlparser reads `ONLY t` as table `only` aliased `t` (ONLY is reserved).
        c("select * from only t where id = 1", K::Read).tables(&["t"]),
        c("select * from t join only u on true", K::Read).tables(&["t", "u"]),
        c("update only t set a = 1 where id = 2", K::Write).tables(&["t"]),
        c("delete from only t where id = 2", K::Write).tables(&["t"]),
        c("select * from \"only\" where id = 1", K::Read)
            .tables(&["only"])
            .point("only", "id", &[L(0)]),
        c("delete from t using u where t.id = u.id", K::Write).flags("join"),
        c(
            "merge into t using u on t.id = u.id when matched then update set a = u.a",
            K::Write,
        )
        .tables(&["t", "u"]),
        c("copy t from stdin", K::Write).tables(&["t"]),
        c("copy t (a, b) from stdin with (format csv)", K::Write).tables(&["t"]),
        c("copy t to stdout", K::Read).tables(&["t"]),
        c("copy (select * from t) to stdout", K::Read).tables(&["t"]),
        c("copy t from '/tmp/x.csv'", K::Write).tables(&["t"]),
        c("with d as (delete from t returning *) select * from d", K::Write)
            .tables(&["t"])
            .flags("cte writing_cte"),
        c("with x as (select 1) insert into t select * from x", K::Write).tables(&["t"]),
        c("with t as (select 1) insert into t select * from t", K::Write).tables(&["t"]),
        c("with x as (select 1) update x set a = 1", K::Write).tables(&["x"]),
        c("copy (delete from t returning *) to stdout", K::Write),
        c("explain analyze delete from t", K::Write),
        c("explain (analyze, buffers) update t set a = 1", K::Write),
        c("explain analyze select * from t", K::Read),
        c("explain delete from t", K::Read),
        c("explain (analyze false) delete from t", K::Read),
        c(
            "explain analyze execute w(1)",
            other(OtherCommand::Execute { name: "w".into() }),
        ),
        c("explain execute w(1)", K::Read),
        c("explain select * from t where id = 1", K::Read).tables(&["t"]),
        // --- reads of other forms ---
        c("values (1), (2)", K::Read),
        c("table t", K::Read).tables(&["t"]),
        c("TABLE s.t", K::Read).tables(&["s.t"]),
        c("show timezone", K::Read),
        c("SHOW ALL", K::Read),
        c("select 1", K::Read),
        c("select $1", K::Read),
        // --- DDL ---
        c("create table t (id int primary key, name varchar(10))", K::Ddl),
        c("CREATE INDEX ON t (a)", K::Ddl),
        c("create index i on t using gin (to_tsvector('english', body))", K::Ddl),
        c("alter table t add column b int default 0", K::Ddl).tables(&["t"]),
        c("drop table t, s.u", K::Ddl).tables(&["t", "s.u"]),
        c("drop index i", K::Ddl),
        c("truncate t", K::Ddl).tables(&["t"]),
        c("grant select on t to bob", K::Ddl),
        c("revoke all on t from bob", K::Ddl),
        c("comment on table t is 'hello'", K::Ddl),
        c("create view v as select * from t", K::Ddl),
        c("create table u as select * from t", K::Ddl),
        c("create function f() returns int as $$ select 1 $$ language sql", K::Ddl),
        c("create sequence s start 10", K::Ddl),
        // --- transactions ---
        c("begin", txn(T::Begin)),
        c("BEGIN ISOLATION LEVEL SERIALIZABLE", txn(T::Begin)),
        c("start transaction read only", txn(T::Begin)),
        c("commit", txn(T::Commit)),
        c("commit and chain", txn(T::CommitAndChain)),
        c("end", txn(T::Commit)),
        c("rollback", txn(T::Rollback)),
        c("abort", txn(T::Rollback)),
        c("savepoint s1", txn(T::Savepoint)),
        c("release savepoint s1", txn(T::Release)),
        c("release s1", txn(T::Release)),
        c("rollback to savepoint s1", txn(T::RollbackToSavepoint)),
        c("rollback to s1", txn(T::RollbackToSavepoint)),
        c("prepare transaction 'gid'", txn(T::PrepareTransaction)),
        c("commit prepared 'gid'", txn(T::CommitPrepared)),
        c("rollback prepared 'gid'", txn(T::RollbackPrepared)),
        // --- session settings ---
        c("SET TimeZone = 'UTC'", SET("timezone", false)),
        c("set time zone 'Europe/Paris'", SET("timezone", false)),
        c("SET LOCAL statement_timeout = 5000", SET("statement_timeout", true)),
        c("set session search_path to a, b", SET("search_path", false)),
        c("set \"TimeZone\" to default", SET("timezone", false)),
        c("set application_name = 'x'", SET("application_name", false)),
        c("set role admin", SET("role", false)),
        c("set session authorization bob", SET("session_authorization", false)),
        c("set transaction isolation level serializable", SET("transaction", true)),
        c("reset timezone", K::Set(SetCommand::Reset { name: "timezone".into() })),
        c("reset all", K::Set(SetCommand::ResetAll)),
        c("discard all", K::Set(SetCommand::Discard(DiscardTarget::All))),
        c("DISCARD PLANS", K::Set(SetCommand::Discard(DiscardTarget::Plans))),
        c("discard temp", K::Set(SetCommand::Discard(DiscardTarget::Temp))),
        // --- other ---
        c("listen ch", other(OtherCommand::Listen { channel: "ch".into() })),
        c("LISTEN \"Ch\"", other(OtherCommand::Listen { channel: "Ch".into() })),
        c("unlisten ch", other(OtherCommand::Unlisten { channel: Some("ch".into()) })),
        c("unlisten *", other(OtherCommand::Unlisten { channel: None })),
        c("notify ch, 'payload'", other(OtherCommand::Notify { channel: "ch".into() })),
        c("do $$ begin perform 1; end $$", other(OtherCommand::Do)),
        c("DO LANGUAGE plpgsql $x$ begin end $x$", other(OtherCommand::Do)),
        c("call p(1, 'a')", other(OtherCommand::Call)),
        c("vacuum t", other(OtherCommand::Vacuum)),
        c("vacuum (verbose, analyze) t", other(OtherCommand::Vacuum)),
        c("analyze t", other(OtherCommand::Analyze)),
        c("checkpoint", other(OtherCommand::Maintenance)),
        c(
            "prepare p (int) as select * from t where id = $1",
            other(OtherCommand::Prepare {
                name: "p".into(),
                statement: Box::new(K::Read),
            }),
        )
        .tables(&["t"]),
        c(
            "PREPARE q AS UPDATE t SET a = $1",
            other(OtherCommand::Prepare {
                name: "q".into(),
                statement: Box::new(K::Write),
            }),
        ),
        c("execute p(1)", other(OtherCommand::Execute { name: "p".into() })),
        c("deallocate p", other(OtherCommand::Deallocate { name: Some("p".into()) })),
        c("deallocate prepare p", other(OtherCommand::Deallocate { name: Some("p".into()) })),
        c("DEALLOCATE ALL", other(OtherCommand::Deallocate { name: None })),
        // Names fold as Postgres folds them: unquoted to lower case, quoted verbatim.
        c("DEALLOCATE Foo", other(OtherCommand::Deallocate { name: Some("foo".into()) })),
        c(r#"DEALLOCATE "Foo""#, other(OtherCommand::Deallocate { name: Some("Foo".into()) })),
        c(r#"DEALLOCATE "all""#, other(OtherCommand::Deallocate { name: Some("all".into()) })),
        c("EXECUTE Foo", other(OtherCommand::Execute { name: "foo".into() })),
        c("lock table t in exclusive mode", other(OtherCommand::Lock)),
        c("declare c cursor for select * from t", other(OtherCommand::Cursor)),
        c("fetch 10 from c", other(OtherCommand::Cursor)),
        c("close c", other(OtherCommand::Cursor)),
        // --- multi-statement ---
        c("begin; update t set a = 1 where id = 2; commit;", K::Multi).tables(&["t"]),
        c("select 1; select 2", K::Multi),
        c("set x = 1; select * from t where id = 1", K::Multi),
        // --- empty ---
        c("", K::Empty),
        c("   ", K::Empty),
        c(";", K::Empty),
        c(" ; ;; ", K::Empty),
        c("-- nothing", K::Empty),
        c("/* nothing /* nested */ here */", K::Empty),
        // --- lexically invalid or unparseable ---
        c("select 'unterminated", K::Unparsed),
        c("select \"unterminated", K::Unparsed),
        c("select 1 /* unterminated", K::Unparsed),
        c("select $tag$ never closed", K::Unparsed),
        c("select $", K::Unparsed),
        c("select $0", K::Unparsed),
        c("select $70000", K::Unparsed),
        c("selec * form t", K::Unparsed),
        c("select * from t where", K::Unparsed),
        c("garbage ( ) ;;; )))", K::Unparsed),
        c("}{ ][ \\", K::Unparsed),
        c("select * from t where id = 1 for no key update", K::Unparsed),
        c("select 1; garbage", K::Unparsed),
        c("do", K::Other(OtherCommand::Do)),
        c("create gizmo foo", K::Unparsed),
        // --- literal kinds and keywords in assorted positions ---
        c("select B'0101', X'1F', N'n', e'\\t', 1.5e-3, .5, 1., 0o17, 0b101", K::Read),
        c("select date '2020-01-01', interval '1 day', timestamptz '2020-01-01 00:00+00'", K::Read),
        c("select '2020-01-01'::date + interval '1' day", K::Read),
        c("select * from t where created > now() - interval '1 day'", K::Read).flags("volatile"),
        c("insert into t values (1", K::Unparsed),
        c("select 'a'\n'b'", K::Read),
        c("select cast('1.5' as numeric(10, 2))", K::Read),
        c("select x::varchar(20) from t where id = 1", K::Read),
        c("select array[1, 2][1]", K::Read),
        c("select '{\"a\":1}'::jsonb -> 'a'", K::Read),
        c("select * from t where data @> '{\"a\":1}'", K::Read).flags("other_conj"),
        c("select * from t where id = 1 -- comment with 'quote\n", K::Read).point("t", "id", &[L(0)]),
    ]
}

#[test]
fn table_driven_cases() {
    let classifier = Classifier::new(1000);
    let cases = cases();
    assert!(cases.len() >= 120, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let r = classifier.classify(case.sql);
        let s = &r.shape;
        let mut errs = Vec::new();
        if s.kind != case.kind {
            errs.push(format!("kind {:?}, want {:?}", s.kind, case.kind));
        }
        if let Some(want) = &case.tables {
            let got: Vec<String> = s.tables.iter().map(table_name).collect();
            if got != *want {
                errs.push(format!("tables {got:?}, want {want:?}"));
            }
        }
        match (&s.point_read, &case.point) {
            (None, None) => {}
            (Some(p), Some((t, col, keys))) => {
                if table_name(&p.table) != *t || &*p.column != *col || p.keys != *keys {
                    errs.push(format!("point read {p:?}, want {t}.{col} {keys:?}"));
                }
            }
            (got, want) => errs.push(format!("point read {got:?}, want {want:?}")),
        }
        let got: Vec<Pred> = s
            .text_predicates
            .iter()
            .map(|p| {
                // Leak is fine in a test: it lets the tuple hold &'static str.
                let col: &'static str = Box::leak(p.column.to_string().into_boxed_str());
                (col, op_name(&p.op), p.negated, p.pattern)
            })
            .collect();
        if got != case.preds {
            errs.push(format!("text predicates {got:?}, want {:?}", case.preds));
        }
        for f in case.flags.split_whitespace() {
            if !flag(&s.flags, f) {
                errs.push(format!("flag {f} not set"));
            }
        }
        for f in case.not_flags.split_whitespace() {
            if flag(&s.flags, f) {
                errs.push(format!("flag {f} set"));
            }
        }
        if !errs.is_empty() {
            failures.push(format!(
                "{:?} → {}\n    {}",
                case.sql,
                s.normalized,
                errs.join("\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn point_read_details() {
    let c = Classifier::new(10);
    // Keys with different casts are not a point read.
    let r = c.classify("select a, b as bee from s.t x where x.id in (7, -8, '9'::int) limit 3");
    assert_eq!(r.shape.point_read, None);
    let r = c.classify("select a, b as bee from s.t x where x.id in (7, -8, '9') limit 3");
    let p = r.shape.point_read.as_ref().expect("point read");
    assert_eq!(p.alias.as_deref(), Some("x"));
    assert_eq!(p.table, TableRef::new(Some("s"), "t"));
    assert_eq!(p.keys, vec![L(0), N(1), L(2)]);
    assert_eq!(p.key_cast, None);
    assert_eq!(p.limit, Some(L(3)));
    assert_eq!(
        p.projection,
        Projection::Columns(vec![
            ProjectedColumn {
                name: "a".into(),
                alias: None
            },
            ProjectedColumn {
                name: "b".into(),
                alias: Some("bee".into())
            },
        ])
    );
    let r = c.classify("select * from s.t x where x.id in (7, -8, 9) limit 3");
    let p = r.shape.point_read.as_ref().expect("point read");
    let keys: Vec<_> = p.keys.iter().map(|k| r.key(k)).collect();
    assert_eq!(
        keys,
        vec![
            Some(KeyRef::Literal(&Literal::Number("7".into()))),
            Some(KeyRef::NegativeNumber("8")),
            Some(KeyRef::Literal(&Literal::Number("9".into()))),
        ]
    );
    assert_eq!(keys[1].and_then(|k| k.as_i64()), Some(-8));
    let r = c.classify("select * from t where id = $1::int8");
    let p = r.shape.point_read.as_ref().expect("point read");
    assert_eq!(p.key_cast.as_deref(), Some("int8"));
    assert_eq!(r.key(&p.keys[0]), Some(KeyRef::Param(1)));
    let r = c.classify("select * from t where id = '42'::bigint");
    let p = r.shape.point_read.as_ref().expect("point read");
    assert_eq!(p.key_cast.as_deref(), Some("bigint"));
    assert_eq!(r.key(&p.keys[0]).and_then(|k| k.as_i64()), Some(42));
    // A negated string is not a key.
    let r = c.classify("select * from t where id = -'5'");
    let p = r.shape.point_read.as_ref().expect("point read");
    assert_eq!(r.key(&p.keys[0]), None);
    // Literals after parameters are numbered after them.
    let r = c.classify("select * from t where id = $2 and x like 'a%' and y = $1");
    assert_eq!(r.shape.max_param, 2);
    assert_eq!(r.shape.text_predicates[0].pattern, L(0));
}

#[test]
fn key_values() {
    let n = |s: &str| Literal::Number(s.into());
    let st = |s: &str| Literal::String(s.into());
    assert_eq!(KeyRef::Literal(&n("42")).as_i64(), Some(42));
    // PostgreSQL 16 spellings are errors before 16: left to Postgres.
    for t in ["1_000", "0x1F", "0o17", "0b101", "0x1__F", "1__0"] {
        assert_eq!(KeyRef::Literal(&n(t)).as_i64(), None, "{t}");
        assert_eq!(KeyRef::NegativeNumber(t).as_i64(), None, "-{t}");
    }
    assert_eq!(KeyRef::Literal(&n("1.5")).as_i64(), None);
    assert_eq!(KeyRef::Literal(&n("99999999999999999999")).as_i64(), None);
    assert_eq!(
        KeyRef::NegativeNumber("9223372036854775808").as_i64(),
        Some(i64::MIN)
    );
    assert_eq!(KeyRef::Literal(&n("9223372036854775808")).as_i64(), None);
    assert_eq!(KeyRef::Literal(&st(" 42 ")).as_i64(), Some(42));
    assert_eq!(KeyRef::Literal(&st("\t\x0b42\n\x0c\r")).as_i64(), Some(42));
    // Not C whitespace: int4in rejects these.
    assert_eq!(KeyRef::Literal(&st("42\u{a0}")).as_i64(), None);
    assert_eq!(KeyRef::Literal(&st("\u{2003}42")).as_i64(), None);
    assert_eq!(KeyRef::Literal(&st("-7")).as_i64(), Some(-7));
    assert_eq!(KeyRef::Literal(&st("4x")).as_i64(), None);
    assert_eq!(KeyRef::Param(1).as_i64(), None);
    assert_eq!(KeyRef::Literal(&n("0x1F")).as_text().as_deref(), Some("31"));
    assert_eq!(
        KeyRef::Literal(&n("1.50")).as_text().as_deref(),
        Some("1.50")
    );
    assert_eq!(KeyRef::NegativeNumber("5").as_text().as_deref(), Some("-5"));
    assert_eq!(
        KeyRef::NegativeNumber("2.5").as_text().as_deref(),
        Some("-2.5")
    );
    assert_eq!(KeyRef::Literal(&st("k")).as_text().as_deref(), Some("k"));
    let opaque = Classified {
        shape: Arc::new(Shape::simple(String::new(), K::Read, 1)),
        literals: vec![Literal::Opaque],
        cache: CacheOutcome::Hit,
    };
    assert_eq!(opaque.key(&L(0)), None);
    assert_eq!(opaque.key(&L(5)), None);
    assert_eq!(opaque.key(&N(0)), None);
}

#[test]
fn text_predicate_details() {
    let c = Classifier::new(10);
    let r = c.classify(
        "select id from docs d where to_tsvector('english', d.body) @@ plainto_tsquery('english'::regconfig, 'fat cats') and title like 'a!%%' escape '!'",
    );
    let preds = &r.shape.text_predicates;
    assert_eq!(preds.len(), 2);
    assert_eq!(
        preds[0].op,
        TextOp::FullText(FullText {
            query_fn: TsQueryFn::PlaintoTsquery,
            query_config: Some(L(1)),
            vector: TsVectorSource::ToTsvector { config: Some(L(0)) },
        })
    );
    assert_eq!(preds[0].table, TableRef::new(None, "docs"));
    assert_eq!(
        r.key(&preds[0].pattern),
        Some(KeyRef::Literal(&Literal::String("fat cats".into())))
    );
    assert_eq!(preds[1].escape, Some(L(4)));
    assert_eq!(
        r.key(&preds[1].pattern),
        Some(KeyRef::Literal(&Literal::String("a!%%".into())))
    );
    let r = c.classify("select * from docs where to_tsvector(body) @@ to_tsquery($1)");
    assert_eq!(
        r.shape.text_predicates[0].op,
        TextOp::FullText(FullText {
            query_fn: TsQueryFn::ToTsquery,
            query_config: None,
            vector: TsVectorSource::ToTsvector { config: None },
        })
    );
    let r = c.classify("select * from t where name ilike $1::text");
    assert_eq!(
        r.shape.text_predicates[0].pattern_cast.as_deref(),
        Some("text")
    );
}

#[test]
fn literals_in_order_and_decoded() {
    let c = Classifier::new(10);
    let r = c.classify(
        "select 'it''s', E'a\\nb', $q$x'y$q$, U&'d\\0061ta', B'10', X'ff', -3, 4.5, n'nat' from t",
    );
    assert_eq!(
        r.literals,
        vec![
            Literal::String("it's".into()),
            Literal::String("a\nb".into()),
            Literal::String("x'y".into()),
            Literal::String("data".into()),
            Literal::BitString {
                hex: false,
                digits: "10".into()
            },
            Literal::BitString {
                hex: true,
                digits: "ff".into()
            },
            Literal::Number("3".into()),
            Literal::Number("4.5".into()),
            Literal::String("nat".into()),
        ]
    );
    assert_eq!(r.shape.literal_count, 9);
    assert_eq!(
        &*r.shape.normalized,
        "select $?, $?, $?, $?, $?, $?, -$?, $?, $? from t"
    );
    let r = c.classify("select E'\\xff\\xfe'");
    assert_eq!(r.literals, vec![Literal::Opaque]);
}

#[test]
fn literal_variants_share_a_shape() {
    let c = Classifier::new(100);
    let groups: &[&[&str]] = &[
        &[
            "SELECT * FROM t WHERE id = 42",
            "select * from t where id = 43",
            "select * from t where id = 'x'",
            "select * from t where id = E'\\n'",
            "select * from t where id = $$dollar$$",
            "select * from t where id = 1.5e10",
            "SELECT * FROM t WHERE id = 42;",
            "SELECT * FROM t WHERE id = 42 -- c",
            "SELECT /* c */ * FROM t WHERE id = 42",
            "SELECT  *\n\tFROM t WHERE id = 42 ; ;",
        ],
        &[
            "UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 5;",
            "UPDATE pgbench_accounts SET abalance = abalance + -1 WHERE aid = 99999;",
        ],
        &[
            "select * from t where id in (1, 2)",
            "select * from t where id in ('a', 'b')",
        ],
        &["select date '2020-01-01'", "select date '1999-12-31'"],
    ];
    for group in groups {
        let first = c.classify(group[0]);
        for sql in &group[1..] {
            let r = c.classify(sql);
            assert!(
                Arc::ptr_eq(&first.shape, &r.shape),
                "{sql:?} ({}) should share the shape of {:?} ({})",
                r.shape.normalized,
                group[0],
                first.shape.normalized
            );
            assert_eq!(r.cache, CacheOutcome::Hit, "{sql}");
        }
    }
}

#[test]
fn structural_differences_do_not_share_a_shape() {
    let c = Classifier::new(100);
    let pairs: &[(&str, &str)] = &[
        (
            "select * from t where id = 1",
            "select * from u where id = 1",
        ),
        (
            "select * from t where id = 1",
            "select * from \"T\" where id = 1",
        ),
        (
            "select * from \"T\" where id = 1",
            "select * from \"t\" where id = 1",
        ),
        (
            "select * from t where id = 1",
            "select * from t where id = $1",
        ),
        (
            "select * from t where id = $1",
            "select * from t where id = $2",
        ),
        (
            "select * from t where id = 1",
            "select * from t where id < 1",
        ),
        (
            "select * from t where id = 1",
            "select * from t where id = -1",
        ),
        (
            "select * from t where id = 1",
            "select * from t where id = 1 for update",
        ),
        ("select 1", "select 1, 2"),
        ("select 'a'", "select \"a\""),
        ("select x::varchar(10)", "select x::varchar(20)"),
        ("select a-1", "select a - 1"),
        ("select 1", "select 1; select 1"),
        ("select \"a b\"", "select \"a  b\""),
        ("select 'a' from t", "select a from t"),
    ];
    for (a, b) in pairs {
        let ra = c.classify(a);
        let rb = c.classify(b);
        assert!(
            !Arc::ptr_eq(&ra.shape, &rb.shape),
            "{a:?} and {b:?} must not share"
        );
        assert_ne!(ra.shape.normalized, rb.shape.normalized, "{a:?} / {b:?}");
    }
}

#[test]
fn cache_is_bounded_and_still_correct() {
    let c = Classifier::new(50);
    assert!(c.is_empty());
    for i in 0..2_000 {
        let sql = format!("select * from t{i} where id = {i}");
        let r = c.classify(&sql);
        assert!(c.len() <= 50);
        let p = r.shape.point_read.as_ref().expect("point read");
        assert_eq!(&*p.table.name, format!("t{i}"));
    }
    assert!(!c.is_empty());
    // A statement in use stays cached through a flood of one-offs.
    let hot = "select abalance from pgbench_accounts where aid = 1";
    let first = c.classify(hot);
    for i in 0..2_000 {
        c.classify(&format!("select {i} from u{i}"));
        assert_eq!(c.classify(hot).cache, CacheOutcome::Hit);
    }
    assert!(Arc::ptr_eq(&first.shape, &c.classify(hot).shape));
    let none = Classifier::new(0);
    assert_eq!(none.classify("select 1").cache, CacheOutcome::Uncached);
    assert_eq!(none.len(), 0);
}

#[test]
fn long_statements_are_not_cached() {
    let c = Classifier::new(10);
    let long = format!(
        "select * from t where id in ({})",
        vec!["1"; 10_000].join(",")
    );
    let r = c.classify(&long);
    assert_eq!(r.cache, CacheOutcome::Uncached);
    assert_eq!(r.shape.kind, K::Read);
    assert_eq!(r.literals.len(), 10_000);
    assert_eq!(
        r.shape.point_read.as_ref().map(|p| p.keys.len()),
        Some(10_000)
    );
    assert!(c.is_empty());
    let two_kb = format!("select {} from t where id = 1", vec!["col"; 500].join(", "));
    assert!(two_kb.len() > 2000);
    c.classify(&two_kb);
    assert_eq!(c.classify(&two_kb).cache, CacheOutcome::Hit);
}

#[test]
fn deep_expressions_do_not_overflow_the_stack() {
    let c = Classifier::new(10);
    for n in [10, 900, 999, 5_000, 20_000] {
        let chain = format!("select {}", vec!["1"; n].join("+"));
        assert_eq!(c.classify(&chain).shape.kind, K::Read, "{n}");
        let ors: Vec<String> = (0..n).map(|i| format!("id = {i}")).collect();
        let sql = format!("select * from t where {}", ors.join(" or "));
        assert_eq!(c.classify(&sql).shape.kind, K::Read, "{n}");
        let ands: Vec<String> = (0..n).map(|i| format!("a{i} like 'x'")).collect();
        let sql = format!("select * from t where {}", ands.join(" and "));
        let r = c.classify(&sql);
        assert_eq!(r.shape.text_predicates.len(), n, "{n}");
    }
    for n in [500, 5_000] {
        let unions = vec!["select 1"; n].join(" union all ");
        let r = c.classify(&unions);
        assert_eq!(r.shape.kind, K::Read, "{n}");
        assert!(r.shape.flags.has_set_operation);
        let inserts = format!("with d as (delete from t returning *) {unions}");
        assert_eq!(c.classify(&inserts).shape.kind, K::Write, "{n}");
    }
    let nested = format!("select {}1{}", "(".repeat(5_000), ")".repeat(5_000));
    assert_eq!(c.classify(&nested).shape.kind, K::Unparsed);
    let too_many = format!("select {}", vec!["1"; 200_000].join(","));
    assert_eq!(c.classify(&too_many).shape.kind, K::Unparsed);
}

#[test]
fn adversarial_input_stays_linear() {
    let c = Classifier::new(10);
    let start = std::time::Instant::now();
    let inputs = [
        format!("select '{}", "a".repeat(1 << 20)),
        format!("select {}", "/*".repeat(1 << 18)),
        format!("select {}", "$a$".repeat(1 << 18)),
        format!("select E'{}", "\\'".repeat(1 << 18)),
        format!("select {}", "\"".repeat((1 << 18) + 1)),
        "-".repeat(1 << 20),
        "'".repeat(1 << 20),
        format!("select 1{}", " ".repeat(1 << 20)),
        format!("select {}", "'a'\n".repeat(1 << 16)),
    ];
    for sql in &inputs {
        let _ = c.classify(sql);
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const FRAGMENTS: &[&str] = &[
    "select ",
    "SELECT",
    " * ",
    "from ",
    " t ",
    "where ",
    "id",
    " = ",
    "=",
    "'",
    "''",
    "'a'",
    "\"",
    "\"Q\"",
    "$",
    "$1",
    "$$",
    "$a$",
    "$a",
    "--",
    "/*",
    "*/",
    "\n",
    "E'",
    "e'\\",
    "\\",
    "U&'",
    "u&\"",
    "B'",
    "X'",
    "N'",
    "1",
    ".5",
    "1e",
    "1e-",
    "0x",
    "0b",
    "_",
    "(",
    ")",
    ",",
    ";",
    "::",
    ":",
    "-",
    "+",
    "~*",
    "!~",
    "@@",
    "é",
    "\u{0}",
    "\u{1F600}",
    "in ",
    "like ",
    "and ",
    "or ",
    "limit ",
    "for update",
    "with x as ",
    "insert into ",
    "values ",
    "begin",
    "set ",
    "uescape ",
    "date ",
    "varchar(",
    "?",
    "[",
    "]",
    "\t",
    "\r",
    "{",
    "}",
    "Select",
    "WHERE",
    "x",
    "0X1f",
    "1_0",
    "ab$",
    "9",
    "'z'",
    "$$q$$",
    "numeric(",
    "10",
    " ",
];

fn random_sql(rng: &mut Rng) -> String {
    let mut s = String::new();
    let parts = rng.below(24);
    for _ in 0..parts {
        if rng.below(6) == 0 {
            let bytes: Vec<u8> = (0..rng.below(6)).map(|_| rng.next() as u8).collect();
            s.push_str(&String::from_utf8_lossy(&bytes));
        } else {
            s.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]);
        }
    }
    s
}

/// Re-normalizes normalized text, reading `$?` markers as literals.
fn renormalize(normalized: &str) -> Option<String> {
    let mut out = String::new();
    let mut lits = Vec::new();
    normalize::normalize(
        normalized,
        normalize::Mode::Renormalize,
        &mut out,
        &mut lits,
    )
    .ok()?;
    Some(out)
}

#[test]
fn generated_input_never_panics_and_normalization_is_idempotent() {
    let c = Classifier::new(64);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut lexed = 0;
    for _ in 0..20_000 {
        let sql = random_sql(&mut rng);
        let r = c.classify(&sql);
        let again = c.classify(&sql);
        assert_eq!(r.shape.normalized, again.shape.normalized, "{sql:?}");
        assert_eq!(r.shape.kind, again.shape.kind, "{sql:?}");
        assert_eq!(
            r.literals.len(),
            r.shape.literal_count.max(r.literals.len())
        );
        if r.cache == CacheOutcome::Uncached && r.shape.kind == K::Unparsed {
            continue;
        }
        lexed += 1;
        let n = &*r.shape.normalized;
        assert_eq!(
            renormalize(n).as_deref(),
            Some(n),
            "not idempotent for {sql:?}"
        );
        for k in r.shape.point_read.iter().flat_map(|p| p.keys.iter()) {
            let _ = r.key(k);
        }
    }
    assert!(lexed > 1_000, "only {lexed} lexable inputs");
}

type Tok = (lexer::TokKind, String, bool);

fn lex_all(sql: &str, markers: bool) -> Option<Vec<Tok>> {
    let mut l = lexer::Lexer::new(sql);
    l.markers = markers;
    let mut v = Vec::new();
    while let Some(t) = l.next_token() {
        let t = t.ok()?;
        v.push((t.kind, t.text.to_owned(), t.space_before));
    }
    Some(v)
}

/// The normalized text must re-lex into the original token sequence with literals as
/// markers: then two statements can share a normalized text only if they differ in literal
/// values alone (and in letter case, whitespace, comments, trailing semicolons).
#[test]
fn normalization_keeps_every_token_but_literals() {
    use lexer::{StrKind, TokKind};
    let mut rng = Rng(0x0123_4567_89AB_CDEF);
    let mut checked = 0;
    for _ in 0..30_000 {
        let sql = random_sql(&mut rng);
        let Some(mut orig) = lex_all(&sql, false) else {
            continue;
        };
        while orig.last().is_some_and(|t| t.1 == ";") {
            orig.pop();
        }
        let mut n = String::new();
        let mut lits = Vec::new();
        if normalize::normalize(&sql, normalize::Mode::Key, &mut n, &mut lits).is_err() {
            continue;
        }
        let re = lex_all(&n, true).unwrap_or_else(|| panic!("{n:?} from {sql:?} does not re-lex"));
        assert_eq!(orig.len(), re.len(), "{sql:?} → {n:?}");
        let mut out_so_far = String::new();
        for (i, (o, r)) in orig.iter().zip(&re).enumerate() {
            if r.0 == TokKind::Str(StrKind::Marker) {
                assert!(
                    matches!(o.0, TokKind::Number | TokKind::Str(_)),
                    "{sql:?} → {n:?}: marker for {o:?}"
                );
                let forced = out_so_far
                    .as_bytes()
                    .last()
                    .is_some_and(|&c| lexer::is_ident_cont(c));
                assert!(
                    i == 0 || o.2 == r.2 || (forced && r.2),
                    "{sql:?} → {n:?} at {i}"
                );
            } else {
                assert_eq!(o.0, r.0, "{sql:?} → {n:?} at {i}");
                let want = if o.0 == TokKind::Ident {
                    o.1.to_ascii_lowercase()
                } else {
                    o.1.clone()
                };
                assert_eq!(want, r.1, "{sql:?} → {n:?} at {i}");
                assert!(i == 0 || o.2 == r.2, "{sql:?} → {n:?} spacing at {i}");
            }
            out_so_far.push_str(&r.1);
        }
        checked += 1;
    }
    assert!(checked > 1_000, "only {checked} lexable inputs");
}

#[test]
fn classifier_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Classifier>();
    assert_send_sync::<Classified>();
}

#[test]
fn classify_is_shared_across_threads() {
    let c = Arc::new(Classifier::new(100));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                for i in 0..500 {
                    let r = c.classify(&format!("select * from t where id = {}", i * t));
                    assert!(r.shape.point_read.is_some());
                }
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().is_ok());
    }
    assert_eq!(c.len(), 1);
}

#[test]
fn may_write() {
    let c = Classifier::new(10);
    for (sql, w) in [
        ("select 1", false),
        ("select * from t where id = 1", false),
        ("select nextval('s')", true),
        ("select my_fn()", true),
        ("insert into t values (1)", true),
        ("begin", false),
        ("commit prepared 'g'", true),
        ("rollback prepared 'g'", false),
        ("prepare transaction 'g'", false),
        ("set x = 1", false),
        ("do $$ begin end $$", true),
        ("garbage", true),
        ("select 1; delete from t", true),
        ("select 1; select 2", false),
        ("create table x (a int)", true),
    ] {
        assert_eq!(c.classify(sql).shape.may_write(), w, "{sql}");
    }
}

#[test]
fn kind_names_match_indexes() {
    for k in [K::Read, K::Write, K::Ddl, K::Multi, K::Empty, K::Unparsed] {
        assert_eq!(KIND_NAMES[kind_index(&k)], k.name());
    }
    assert_eq!(KIND_NAMES[kind_index_unparsed()], "unparsed");
}

/// Expected [`WriteKeys`]: `"table"` or `"schema.table"`, `(column, keys)`, assigned.
fn wk(
    kind: WriteKind,
    table: &str,
    by_column: &[(&str, &[KeyValue])],
    assigned: &[&str],
) -> WriteKeys {
    let table = match table.split_once('.') {
        Some((s, t)) => TableRef::new(Some(s), t),
        None => TableRef::new(None, table),
    };
    WriteKeys {
        table,
        by_column: by_column
            .iter()
            .map(|(c, k)| ((*c).into(), k.to_vec()))
            .collect(),
        assigned: assigned.iter().map(|&c| c.into()).collect(),
        kind,
    }
}

fn write_key_cases() -> Vec<(&'static str, Vec<WriteKeys>)> {
    use WriteKind::{Delete as D, Insert as I, Update as U};
    vec![
        // --- UPDATE: key conditions in the top-level AND chain ---
        (
            "update t set a = 1 where id = 2",
            vec![wk(U, "t", &[("id", &[L(1)])], &["a"])],
        ),
        (
            "update t set a = $1 where id = $2",
            vec![wk(U, "t", &[("id", &[P(2)])], &["a"])],
        ),
        (
            "UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 5;",
            vec![wk(U, "pgbench_accounts", &[("aid", &[L(1)])], &["abalance"])],
        ),
        (
            "update t as x set a = 1 where x.id = 5",
            vec![wk(U, "t", &[("id", &[L(1)])], &["a"])],
        ),
        (
            "update t x set a = 1 where id = 5",
            vec![wk(U, "t", &[("id", &[L(1)])], &["a"])],
        ),
        // With an alias the table name no longer names the row (PostgreSQL rejects it).
        (
            "update t x set a = 1 where t.id = 5",
            vec![wk(U, "t", &[], &["a"])],
        ),
        (
            "update t set a = 1 where t.id = 5",
            vec![wk(U, "t", &[("id", &[L(1)])], &["a"])],
        ),
        (
            "update t set a = 1 where id in (1, 2, 3)",
            vec![wk(U, "t", &[("id", &[L(1), L(2), L(3)])], &["a"])],
        ),
        (
            "update t set a = 1 where id in ($1, $2)",
            vec![wk(U, "t", &[("id", &[P(1), P(2)])], &["a"])],
        ),
        (
            "update t set a = 1 where id = -5",
            vec![wk(U, "t", &[("id", &[N(1)])], &["a"])],
        ),
        (
            "update t set a = 1 where id = $1::int",
            vec![wk(U, "t", &[("id", &[P(1)])], &["a"])],
        ),
        (
            "update t set a = 1 where id = cast('7' as bigint) and b = 2",
            vec![wk(U, "t", &[("id", &[L(1)]), ("b", &[L(2)])], &["a"])],
        ),
        (
            "update t set a = 1 where 5 = id",
            vec![wk(U, "t", &[("id", &[L(1)])], &["a"])],
        ),
        (
            "update t set a = 1 where ((id) = (5))",
            vec![wk(U, "t", &[("id", &[L(1)])], &["a"])],
        ),
        (
            "update t set a = 1 where id = 1 and id = 2",
            vec![wk(U, "t", &[("id", &[L(1)]), ("id", &[L(2)])], &["a"])],
        ),
        (
            "update t set a = 'x' where b like 'y%' and id = 7 and c > 3",
            vec![wk(U, "t", &[("id", &[L(2)])], &["a"])],
        ),
        (
            "update t set a = 1 where id = 1 and (b = 2 or c = 3)",
            vec![wk(U, "t", &[("id", &[L(1)])], &["a"])],
        ),
        (
            "update t set a = 1 where id = 2 and b in (select x from u)",
            vec![wk(U, "t", &[("id", &[L(1)])], &["a"])],
        ),
        (
            "update t set a = 1 where id = $1::int4 and b = cast($2 as integer) and c = '7'::int8 and d = $3::uuid and e = $4::character varying and f in ($5::smallint)",
            vec![wk(
                U,
                "t",
                &[
                    ("id", &[P(1)]),
                    ("b", &[P(2)]),
                    ("c", &[L(1)]),
                    ("d", &[P(3)]),
                    ("e", &[P(4)]),
                    ("f", &[P(5)]),
                ],
                &["a"],
            )],
        ),
        // Casts that may change the value (type modifiers, other types) are not keys.
        (
            "update t set a = 1 where id = 1 and b = 'abc'::varchar(2) and c = 'x'::char and d = '1.5'::numeric(2, 0) and e = '2020-01-01'::date",
            vec![wk(U, "t", &[("id", &[L(1)])], &["a"])],
        ),
        // Keys with differing casts are not one key list (as for point reads).
        (
            "update t set a = 1 where id = $1 and b in (1, '2'::int)",
            vec![wk(U, "t", &[("id", &[P(1)])], &["a"])],
        ),
        // --- UPDATE: nothing narrows the rows ---
        (
            "update t set a = 1 where id = 1 or id = 2",
            vec![wk(U, "t", &[], &["a"])],
        ),
        ("update t set a = 1", vec![wk(U, "t", &[], &["a"])]),
        (
            "update t set a = 1 where id > 5",
            vec![wk(U, "t", &[], &["a"])],
        ),
        (
            "update t set a = 1 where id = b",
            vec![wk(U, "t", &[], &["a"])],
        ),
        (
            "update t set a = 1 where id = -$1",
            vec![wk(U, "t", &[], &["a"])],
        ),
        (
            "update t set a = 1 where id = null",
            vec![wk(U, "t", &[], &["a"])],
        ),
        (
            "update t set a = 1 where id not in (1, 2)",
            vec![wk(U, "t", &[], &["a"])],
        ),
        // --- UPDATE: identifiers, schemas, assignments ---
        (
            "update \"Users\" set \"Name\" = 'x' where \"Id\" = 3",
            vec![wk(U, "Users", &[("Id", &[L(1)])], &["Name"])],
        ),
        (
            "UPDATE T SET A = 1 WHERE ID = 2",
            vec![wk(U, "t", &[("id", &[L(1)])], &["a"])],
        ),
        (
            "update s.t set a = 1 where s.t.id = 2",
            vec![wk(U, "s.t", &[("id", &[L(1)])], &["a"])],
        ),
        (
            "update t set (a, b) = (1, 2), c = 3 where id = 4",
            vec![wk(U, "t", &[("id", &[L(3)])], &["a", "b", "c"])],
        ),
        (
            "update t set id = id + 1 where id = 5",
            vec![wk(U, "t", &[("id", &[L(1)])], &["id"])],
        ),
        (
            "update t set a = 1 where id = 2 returning *",
            vec![wk(U, "t", &[("id", &[L(1)])], &["a"])],
        ),
        (
            "update t set c.f = 1 where id = 2",
            vec![wk(U, "t", &[("id", &[L(1)])], &["c"])],
        ),
        // sqlparser reads `ONLY t` as table `only` aliased `t`; ONLY narrows the rows.
        (
            "update only t set a = 1 where t.id = 2",
            vec![wk(U, "t", &[("id", &[L(1)])], &["a"])],
        ),
        (
            "delete from only t where id = $1",
            vec![wk(D, "t", &[("id", &[P(1)])], &[])],
        ),
        (
            "delete from \"only\" where id = 1",
            vec![wk(D, "only", &[("id", &[L(0)])], &[])],
        ),
        // --- UPDATE .. FROM: only conditions qualified with the target count ---
        (
            "update t set a = 1 from u where t.id = 5 and u.x = t.uid and id = 7",
            vec![wk(U, "t", &[("id", &[L(1)])], &["a"])],
        ),
        (
            "update t set a = u.a from u where t.id = u.tid",
            vec![wk(U, "t", &[], &["a"])],
        ),
        (
            "update t x set a = 1 from u where x.id = $1 and u.id = 2",
            vec![wk(U, "t", &[("id", &[P(1)])], &["a"])],
        ),
        (
            "update t set a = 1 from u where id = 5",
            vec![wk(U, "t", &[], &["a"])],
        ),
        // --- DELETE ---
        (
            "delete from t where id = 1",
            vec![wk(D, "t", &[("id", &[L(0)])], &[])],
        ),
        (
            "delete from t as d where d.id in ($1, $2) and d.v = -1",
            vec![wk(D, "t", &[("id", &[P(1), P(2)]), ("v", &[N(0)])], &[])],
        ),
        ("delete from t", vec![wk(D, "t", &[], &[])]),
        (
            "delete from t where id = 1 or id = 2",
            vec![wk(D, "t", &[], &[])],
        ),
        (
            "delete from t using u where t.id = 3 and t.uid = u.id",
            vec![wk(D, "t", &[("id", &[L(0)])], &[])],
        ),
        (
            "delete from t using u where id = 3",
            vec![wk(D, "t", &[], &[])],
        ),
        (
            "delete from public.t where id = $1::bigint returning *",
            vec![wk(D, "public.t", &[("id", &[P(1)])], &[])],
        ),
        // --- INSERT .. VALUES ---
        (
            "insert into t (id, name) values (1, 'a')",
            vec![wk(I, "t", &[("id", &[L(0)]), ("name", &[L(1)])], &[])],
        ),
        (
            "insert into t (id, name) values (1, 'a'), (2, 'b'), (-3, 'c')",
            vec![wk(
                I,
                "t",
                &[("id", &[L(0), L(2), N(4)]), ("name", &[L(1), L(3), L(5)])],
                &[],
            )],
        ),
        (
            "insert into t (id, name) values ($1, $2)",
            vec![wk(I, "t", &[("id", &[P(1)]), ("name", &[P(2)])], &[])],
        ),
        (
            "insert into t (id, name) values ($1::int, cast($2 as text))",
            vec![wk(I, "t", &[("id", &[P(1)]), ("name", &[P(2)])], &[])],
        ),
        (
            "insert into t (id, name, code) values ($1::bigint, $2::varchar(3), $3::text)",
            vec![wk(I, "t", &[("id", &[P(1)]), ("code", &[P(3)])], &[])],
        ),
        (
            "insert into t (id, ts) values (1, now())",
            vec![wk(I, "t", &[("id", &[L(0)])], &[])],
        ),
        (
            "insert into t (id, name) values (1, 'a'), (lower('x'), 'b')",
            vec![wk(I, "t", &[("name", &[L(1), L(3)])], &[])],
        ),
        (
            "insert into t (id, a, b) values (1, default, null)",
            vec![wk(I, "t", &[("id", &[L(0)])], &[])],
        ),
        (
            "insert into \"Users\" (\"Id\", name) values (1, 'x') returning \"Id\"",
            vec![wk(I, "Users", &[("Id", &[L(0)]), ("name", &[L(1)])], &[])],
        ),
        (
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 5, 42, CURRENT_TIMESTAMP);",
            vec![wk(
                I,
                "pgbench_history",
                &[
                    ("tid", &[L(0)]),
                    ("bid", &[L(1)]),
                    ("aid", &[L(2)]),
                    ("delta", &[L(3)]),
                ],
                &[],
            )],
        ),
        // --- INSERT: positions or values unknown ---
        ("insert into t values (1, 'a')", vec![wk(I, "t", &[], &[])]),
        (
            "insert into t (id) select id from u",
            vec![wk(I, "t", &[], &[])],
        ),
        ("insert into t default values", vec![wk(I, "t", &[], &[])]),
        (
            "insert into t (id) values (1), (2, 3)",
            vec![wk(I, "t", &[], &[])],
        ),
        (
            "insert into t (id) values (1) limit 1",
            vec![wk(I, "t", &[], &[])],
        ),
        // `c.f` sets a field of composite column `c`: not `c`'s key; positions still count.
        (
            "insert into t (c.f, id) values (1, 2)",
            vec![wk(I, "t", &[("id", &[L(1)])], &[])],
        ),
        // --- INSERT .. ON CONFLICT ---
        (
            "insert into t (id, a) values (1, 2) on conflict do nothing",
            vec![wk(I, "t", &[("id", &[L(0)]), ("a", &[L(1)])], &[])],
        ),
        // DO UPDATE changes the conflicting row, which shares only the conflict columns.
        (
            "insert into t (id, a) values (1, 2) on conflict (id) do update set a = excluded.a",
            vec![wk(I, "t", &[("id", &[L(0)])], &["a"])],
        ),
        (
            "insert into t (id, a, b) values ($1, $2, 3) on conflict (a, b) do update set id = excluded.id, b = 4",
            vec![wk(I, "t", &[("a", &[P(2)]), ("b", &[L(0)])], &["id", "b"])],
        ),
        (
            "insert into t (id, a) values (1, 2) on conflict on constraint t_pkey do update set a = 3",
            vec![wk(I, "t", &[], &["a"])],
        ),
        // --- not described: table-wide for a consumer ---
        ("with d as (delete from t where id = 1 returning *) select * from d", vec![]),
        ("with x as (select 1) update t set a = 1 where id = 2", vec![]),
        ("with x as (select 1) insert into t (id) values (1)", vec![]),
        (
            "merge into t using u on t.id = u.id when matched then update set a = u.a",
            vec![],
        ),
        ("copy t from stdin", vec![]),
        ("begin; update t set a = 1 where id = 2; commit;", vec![]),
        ("update t set a = 1 where id = 2; delete from t where id = 3", vec![]),
        ("explain analyze update t set a = 1 where id = 2", vec![]),
        ("select * from t where id = 1", vec![]),
        ("truncate t", vec![]),
    ]
}

#[test]
fn write_keys_table_driven() {
    let classifier = Classifier::new(1000);
    let cases = write_key_cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (sql, want) in &cases {
        let r = classifier.classify(sql);
        if r.shape.write_keys != *want {
            failures.push(format!(
                "{sql:?} → {} ({:?})\n    got  {:?}\n    want {want:?}",
                r.shape.normalized, r.shape.kind, r.shape.write_keys
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn write_keys_share_a_shape_and_resolve_per_statement() {
    let c = Classifier::new(100);
    let a = c.classify("update t set a = 'x' where id = 42");
    let b = c.classify("UPDATE t SET a = 'y' WHERE id = 43");
    assert!(Arc::ptr_eq(&a.shape, &b.shape));
    assert_eq!(b.cache, CacheOutcome::Hit);
    let w = &a.shape.write_keys[0];
    let key = |r: &Classified| {
        r.key(&w.by_column[0].1[0])
            .and_then(|k| k.as_i64())
            .expect("integer key")
    };
    assert_eq!((key(&a), key(&b)), (42, 43));

    let a = c.classify("insert into t (id, name) values (1, 'a'), (-2, 'b')");
    let b = c.classify("insert into t (id, name) values (10, 'x'), (-20, 'y')");
    assert!(Arc::ptr_eq(&a.shape, &b.shape));
    let w = &a.shape.write_keys[0];
    let ids = |r: &Classified| -> Vec<Option<i64>> {
        w.by_column[0]
            .1
            .iter()
            .map(|k| r.key(k).and_then(|k| k.as_i64()))
            .collect()
    };
    assert_eq!(ids(&a), vec![Some(1), Some(-2)]);
    assert_eq!(ids(&b), vec![Some(10), Some(-20)]);
    let names: Vec<_> = w.by_column[1]
        .1
        .iter()
        .map(|k| b.key(k).and_then(|k| k.as_text().map(|t| t.into_owned())))
        .collect();
    assert_eq!(names, vec![Some("x".into()), Some("y".into())]);

    let r = c.classify("delete from t where id = $1");
    assert_eq!(
        r.key(&r.shape.write_keys[0].by_column[0].1[0]),
        Some(KeyRef::Param(1))
    );
}

#[test]
fn write_keys_respect_literal_keys_unavailable() {
    use super::extract::{write_keys, KeyCtx};
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;
    // The parse texts `classify` builds for `update t set a = 'x' where id = 5 and b = $1`:
    // literals as `$2`, `$3`, or (fallback) dummies; only parameters may name keys when the
    // literals are dummies.
    let keys = |text: &str, literal_keys: bool| {
        let stmts = Parser::parse_sql(&PostgreSqlDialect {}, text).expect("parses");
        let ctx = KeyCtx {
            max_param: 1,
            base: 2,
            literal_keys,
        };
        write_keys(&stmts[0], &ctx).map(|w| w.by_column)
    };
    let by = |v: &[(&str, &[KeyValue])]| -> Vec<(Box<str>, Vec<KeyValue>)> {
        v.iter().map(|(c, k)| ((*c).into(), k.to_vec())).collect()
    };
    let text = "update t set a = $2 where id = $3 and b = $1";
    assert_eq!(
        keys(text, true),
        Some(by(&[("id", &[L(1)]), ("b", &[P(1)])]))
    );
    assert_eq!(keys(text, false), Some(by(&[("b", &[P(1)])])));
    let dummies = "update t set a = '' where id = '' and b = $1";
    assert_eq!(keys(dummies, false), Some(by(&[("b", &[P(1)])])));
    let insert = "insert into t (id, b) values ($2, $1), (-$3, $1)";
    assert_eq!(
        keys(insert, true),
        Some(by(&[("id", &[L(0), N(1)]), ("b", &[P(1), P(1)])]))
    );
    assert_eq!(keys(insert, false), Some(by(&[("b", &[P(1), P(1)])])));
}

#[test]
fn point_reads_ordered_by_their_key() {
    let c = Classifier::new(10);
    let order = |sql: &str| {
        c.classify(sql)
            .shape
            .point_read
            .as_ref()
            .map(|p| p.order_by_key)
    };
    assert_eq!(order("select * from t where id in (1, 2)"), Some(None));
    assert_eq!(
        order("select * from t where id in (1, 2) order by id"),
        Some(Some(false))
    );
    assert_eq!(
        order("select * from t where id in (1, 2) order by id asc nulls first"),
        Some(Some(false))
    );
    assert_eq!(
        order("select id, name from t where id in ($1, $2) order by id desc"),
        Some(Some(true))
    );
    assert_eq!(
        order("select id as id from t x where id in (3, 4) order by x.id desc"),
        Some(Some(true))
    );
    // An output column named like the key sorts by that column, not the key.
    assert_eq!(
        order("select name as id, id as k from t where id in (3, 4) order by id"),
        None
    );
    assert_eq!(
        order("select id as k from t where id in (3, 4) order by k"),
        None
    );
}
