use super::*;
use crate::config::policy::parse_policy;
use crate::sql::Classifier;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

fn policies() -> PolicySet {
    let cache = parse_policy(
        "tables = [\"public.accounts\"]\n[cache]\nstore = \"memory\"\n",
        Path::new("policies/accounts.toml"),
    )
    .unwrap();
    let search = parse_policy(
        "tables = [\"docs\"]\n[search]\nstore = \"embedded\"\ncolumns = [\"body\"]\n",
        Path::new("policies/docs.toml"),
    )
    .unwrap();
    PolicySet {
        dir: PathBuf::from("policies"),
        policies: vec![cache, search],
        generation: 1,
        loaded_at: SystemTime::now(),
    }
}

const IDLE: SessionView = SessionView {
    in_transaction: false,
    pipelined: false,
    policy_database: true,
};

#[test]
fn reasons_table() {
    let c = Classifier::new(100);
    let p = policies();
    let cases: &[(&str, SessionView, Reason)] = &[
        (
            "SELECT * FROM accounts WHERE id = 1",
            IDLE,
            Reason::KeyNotPlaced,
        ),
        (
            "SELECT * FROM public.accounts WHERE id = $1",
            IDLE,
            Reason::KeyNotPlaced,
        ),
        (
            "SELECT * FROM accounts WHERE id = 1",
            SessionView {
                in_transaction: true,
                pipelined: false,
                policy_database: true,
            },
            Reason::InTransaction,
        ),
        (
            "SELECT * FROM accounts WHERE id = 1",
            SessionView {
                in_transaction: false,
                pipelined: true,
                policy_database: true,
            },
            Reason::Pipelined,
        ),
        (
            "SELECT * FROM accounts WHERE id = 1",
            SessionView {
                in_transaction: false,
                pipelined: false,
                policy_database: false,
            },
            Reason::OtherDatabase,
        ),
        (
            "SELECT * FROM accounts WHERE id = 1 FOR UPDATE",
            IDLE,
            Reason::Locking,
        ),
        (
            "SELECT random() FROM accounts WHERE id = 1",
            IDLE,
            Reason::VolatileFunction,
        ),
        ("SELECT * FROM accounts", IDLE, Reason::NotPointRead),
        (
            "SELECT count(*) FROM accounts WHERE balance > 3",
            IDLE,
            Reason::NotPointRead,
        ),
        ("SELECT * FROM orders WHERE id = 7", IDLE, Reason::NoPolicy),
        (
            "SELECT * FROM app.accounts WHERE id = 7",
            IDLE,
            Reason::NoPolicy,
        ),
        (
            "UPDATE accounts SET balance = 0 WHERE id = 1",
            IDLE,
            Reason::NotARead,
        ),
        ("INSERT INTO accounts VALUES (1)", IDLE, Reason::NotARead),
        ("BEGIN", IDLE, Reason::NotARead),
        ("SET search_path = app", IDLE, Reason::NotARead),
        ("CREATE TABLE t (a int)", IDLE, Reason::NotARead),
        ("SELECT 1; SELECT 2", IDLE, Reason::NotARead),
        ("SELEKT * FROM accounts", IDLE, Reason::Unparsed),
        (
            "SELECT * FROM docs WHERE body LIKE '%x%'",
            IDLE,
            Reason::IndexNotReady,
        ),
        ("SELECT * FROM docs WHERE id = 3", IDLE, Reason::NotInPolicy),
        (
            "SELECT * FROM accounts WHERE name ILIKE 'a%'",
            IDLE,
            Reason::NotInPolicy,
        ),
    ];
    for (sql, session, want) in cases {
        let got = decide(Some(&c.classify(sql).shape), *session, &p);
        assert_eq!(got.reason, *want, "{sql}: {got:?}");
        assert_eq!(got.route, Route::Postgres);
    }
    let unclassified = decide(None, IDLE, &p);
    assert_eq!(unclassified.reason, Reason::Unclassified);
}

#[test]
fn policy_named_when_consulted() {
    let c = Classifier::new(100);
    let d = decide(
        Some(&c.classify("SELECT * FROM accounts WHERE id = 1").shape),
        IDLE,
        &policies(),
    );
    assert_eq!(
        d.policy.as_deref(),
        Some("policies/accounts.toml (public.accounts)")
    );
}

#[test]
fn labels_unique() {
    let mut labels: Vec<_> = Reason::ALL.iter().map(|r| r.label()).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), Reason::ALL.len());
    for (i, r) in Reason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
}
