//! Cost of classifying one statement: a cache hit (lex + hash + lookup), a miss (full
//! sqlparser parse and analysis), and a hit on a 2 KB statement.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use pgpolyglot::sql::Classifier;

fn hit_with_differing_literals(c: &mut Criterion) {
    let classifier = Classifier::new(10_000);
    let stmts: Vec<String> = (0..1024u64)
        .map(|i| {
            format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
                i * 7919 % 100_000
            )
        })
        .collect();
    for s in &stmts {
        classifier.classify(s);
    }
    let mut i = 0;
    c.bench_function("classify/hit_pgbench_select", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(classifier.classify(black_box(&stmts[i])))
        })
    });
}

fn miss_unique_statements(c: &mut Criterion) {
    let classifier = Classifier::new(10_000);
    let mut n = 0u64;
    c.bench_function("classify/miss_unique_parse", |b| {
        b.iter(|| {
            n += 1;
            let sql = format!("SELECT a, b, c FROM accounts_{n} WHERE id = 42 AND name LIKE 'x%'");
            black_box(classifier.classify(&sql))
        })
    });
}

fn hit_2kb_statement(c: &mut Criterion) {
    let classifier = Classifier::new(10_000);
    let columns: Vec<String> = (0..150).map(|i| format!("t.column_{i:03}")).collect();
    let make = |k: u32| {
        format!(
            "SELECT {} FROM public.wide_table t WHERE t.id = {k} AND t.status = 'active' LIMIT 50",
            columns.join(", ")
        )
    };
    let stmts: Vec<String> = (0..64).map(make).collect();
    assert!(stmts.iter().all(|s| s.len() >= 2048));
    classifier.classify(&stmts[0]);
    let mut i = 0;
    c.bench_function("classify/hit_2kb", |b| {
        b.iter(|| {
            i = (i + 1) & 63;
            black_box(classifier.classify(black_box(&stmts[i])))
        })
    });
}

criterion_group!(
    benches,
    hit_with_differing_literals,
    miss_unique_statements,
    hit_2kb_statement
);
criterion_main!(benches);
