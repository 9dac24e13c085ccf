//! End-to-end tests of the statistics pipeline: recorder → queue → aggregator → snapshot.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::sql::{Classifier, Shape, TableRef};

fn config() -> StatsConfig {
    StatsConfig::default()
}

fn shape(sql: &str) -> Arc<Shape> {
    Classifier::new(16).classify(sql).shape
}

fn within(actual: u64, expected: u64, pct: f64) -> bool {
    (actual as f64 - expected as f64).abs() <= expected as f64 * pct / 100.0
}

/// Zipf(s) over ranks `0..n` by inverse CDF over precomputed cumulative weights.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|i| {
                total += (i as f64).powf(-s);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let total = *self.cumulative.last().unwrap();
        let u = rng.gen::<f64>() * total;
        self.cumulative
            .partition_point(|&c| c <= u)
            .min(self.cumulative.len() - 1)
    }
}

#[test]
fn zipf_top_100_recall() {
    const N: usize = 1_000_000;
    const ACCESSES: usize = 1_000_000;
    let zipf = Zipf::new(N, 1.1);
    let mut rng = StdRng::seed_from_u64(20_261_124);
    let t0 = Instant::now();
    let (rec, mut agg) = new_at(config(), t0).unwrap();
    let table = TableRef::new(None, "items");
    let mut exact = vec![0u32; N];
    for i in 0..ACCESSES {
        let rank = zipf.sample(&mut rng);
        exact[rank] += 1;
        rec.record_key(&table, &rank.to_string(), Access::Read);
        if i % 50_000 == 49_999 {
            // All at one instant: weights are equal, so this measures Space-Saving alone.
            agg.drain_at(t0, usize::MAX);
        }
    }
    agg.drain_at(t0, usize::MAX);
    assert_eq!(rec.dropped(), 0);

    let mut by_count: Vec<usize> = (0..N).collect();
    by_count.sort_by(|&a, &b| exact[b].cmp(&exact[a]).then(a.cmp(&b)));
    let truth: HashSet<String> = by_count[..100].iter().map(|r| r.to_string()).collect();
    let reported = agg.hot_keys(Some(&table), 100);
    assert_eq!(reported.len(), 100);
    let hits = reported.iter().filter(|k| truth.contains(&*k.key)).count();
    let recall = hits as f64 / 100.0;
    let distinct = exact.iter().filter(|&&c| c > 0).count();
    println!(
        "zipf s=1.1, {ACCESSES} accesses, {distinct} distinct keys seen of {N}, k=1000: \
         top-100 recall {recall:.2}"
    );
    assert!(recall >= 0.95, "recall {recall}");

    // Space-Saving guarantees: score overestimates by at most error, never underestimates.
    for k in &reported {
        let true_count = f64::from(exact[k.key.parse::<usize>().unwrap()]);
        assert!(k.score >= true_count - 1e-6, "{k:?} true {true_count}");
        assert!(
            k.score - k.error <= true_count + 1e-6,
            "{k:?} true {true_count}"
        );
        assert_eq!(k.reads as f64, k.score - k.error);
    }
    let hottest = &reported[0];
    assert_eq!((&*hottest.key, hottest.score), ("0", f64::from(exact[0])));
}

#[test]
fn memory_bound_holds_for_100k_tables_and_keys() {
    let t0 = Instant::now();
    let cfg = config();
    let (rec, mut agg) = new_at(cfg.clone(), t0).unwrap();
    let hot = TableRef::new(Some("app"), "hot");
    for i in 0..100_000u32 {
        let t = TableRef::new(None, &format!("t{i}"));
        rec.record_key(&t, "1", Access::Read);
        // One table sees 100k distinct keys too.
        rec.record_key(&hot, &i.to_string(), Access::Write);
        rec.record_key(&hot, "0", Access::Read);
        if i % 10_000 == 9_999 {
            agg.drain_at(t0 + Duration::from_millis(u64::from(i)), usize::MAX);
            let c = agg.counters();
            assert!(c.tables <= cfg.max_tables, "{c:?}");
            for t in agg.tables(0) {
                assert!(t.tracked_keys <= cfg.top_k_per_table, "{t:?}");
            }
        }
    }
    let c = agg.counters();
    assert_eq!(c.dropped(), 0);
    assert_eq!(c.tables, cfg.max_tables);
    assert_eq!(c.evicted_tables, 100_000 - (cfg.max_tables as u64 - 1));
    let tables = agg.tables(3);
    // The table with steady traffic is still there, hottest, with key "0" on top.
    assert_eq!(*tables[0].table, hot);
    assert_eq!(tables[0].tracked_keys, cfg.top_k_per_table);
    assert_eq!(&*tables[0].hot_keys[0].key, "0");
    assert_eq!(tables[0].reads + tables[0].writes, 200_000);
}

#[test]
fn drops_are_counted_when_the_queue_is_full() {
    let t0 = Instant::now();
    let cfg = StatsConfig {
        channel_capacity: 8,
        max_key_len: 16,
        ..config()
    };
    let (rec, mut agg) = new_at(cfg, t0).unwrap();
    let t = TableRef::new(None, "t");
    let s = shape("select 1");
    for i in 0..20 {
        rec.record_key(&t, &i.to_string(), Access::Read);
    }
    for _ in 0..5 {
        rec.record_statement(&s, Route::Postgres, Duration::from_micros(10), 1, false);
    }
    rec.record_key(&t, &"k".repeat(17), Access::Read);
    assert_eq!(rec.dropped(), 12 + 5);
    assert_eq!(agg.handle().dropped(), 17);
    assert_eq!(agg.drain_at(t0, usize::MAX), 8);
    let c = agg.counters();
    assert_eq!(
        (
            c.dropped_keys,
            c.dropped_statements,
            c.oversized_keys,
            c.events
        ),
        (12, 5, 1, 8)
    );
    // Room again: recording works, the counters stay.
    rec.record_statement(&s, Route::Cache, Duration::from_micros(10), 1, false);
    assert_eq!(agg.drain_at(t0, usize::MAX), 1);
    assert_eq!(rec.dropped(), 17);
    // With the aggregator gone, events are dropped (and counted), never blocked on.
    drop(agg);
    rec.record_key(&t, "1", Access::Read);
    assert_eq!(rec.dropped(), 18);
    // A disabled recorder does nothing.
    let off = StatsRecorder::disabled();
    off.record_key(&t, "1", Access::Read);
    assert!(!off.is_enabled());
    assert_eq!(off.dropped(), 0);
}

#[test]
fn per_shape_histograms_match_a_known_distribution() {
    let t0 = Instant::now();
    let (rec, mut agg) = new_at(config(), t0).unwrap();
    let point = shape("select * from users where id = 42");
    let other = shape("update users set name = 'x' where id = 7");
    // 1..=10_000 µs uniformly on Postgres; 100 × 50 µs on the cache.
    for i in 0..10_000u64 {
        let us = (i * 7_919) % 10_000 + 1;
        rec.record_statement(&point, Route::Postgres, Duration::from_micros(us), 1, false);
        if i % 100 == 0 {
            agg.drain_at(t0, usize::MAX);
        }
    }
    for _ in 0..100 {
        rec.record_statement(&point, Route::Cache, Duration::from_micros(50), 1, false);
    }
    rec.record_statement(&other, Route::Postgres, Duration::from_millis(3), 0, true);
    agg.drain_at(t0, usize::MAX);

    let q = agg.queries(10);
    assert_eq!(q.len(), 2);
    let p = &q[0];
    assert_eq!(p.fingerprint, point.fingerprint);
    assert_eq!(&*p.normalized, "select * from users where id = $?");
    assert_eq!(p.kind, "read");
    assert_eq!((p.calls, p.rows, p.errors), (10_100, 10_100, 0));
    assert_eq!(p.routes.len(), 2);
    let pg = &p.routes[0];
    assert_eq!(
        (pg.route, pg.calls, pg.latency.count),
        (Route::Postgres, 10_000, 10_000)
    );
    assert!(within(pg.latency.p50_us, 5_000, 1.0), "{pg:?}");
    assert!(within(pg.latency.p99_us, 9_900, 1.0), "{pg:?}");
    assert!(within(pg.latency.max_us, 10_000, 1.0), "{pg:?}");
    let cache = &p.routes[1];
    assert_eq!((cache.route, cache.latency.count), (Route::Cache, 100));
    assert!(within(cache.latency.p99_us, 50, 1.0), "{cache:?}");
    assert_eq!((q[1].calls, q[1].errors, q[1].kind), (1, 1, "write"));
    assert_eq!(agg.queries(1).len(), 1);
    assert!(agg.queries(0).is_empty());

    let routes = agg.routes();
    assert_eq!(routes.len(), 3);
    assert_eq!((routes[0].calls, routes[0].errors), (10_001, 1));
    assert!(
        within(routes[0].latency.p50_us, 5_000, 1.0),
        "{:?}",
        routes[0]
    );
    assert_eq!(routes[1].calls, 100);
    assert_eq!(routes[2].calls, 0);
    assert_eq!(routes[2].latency, LatencySummary::default());
}

#[test]
fn windows_roll_over() {
    let t0 = Instant::now();
    let w = Duration::from_secs(10);
    let (rec, mut agg) = new_at(
        StatsConfig {
            window: w,
            ..config()
        },
        t0,
    )
    .unwrap();
    let s = shape("select * from t where id = 1");
    let record = |n: usize, us: u64| {
        for _ in 0..n {
            rec.record_statement(&s, Route::Postgres, Duration::from_micros(us), 1, false);
        }
    };
    let pg_count = |agg: &StatsAggregator| {
        agg.queries(1)[0]
            .routes
            .first()
            .map_or(0, |r| r.latency.count)
    };
    record(10, 1_000);
    agg.drain_at(t0 + Duration::from_secs(1), usize::MAX);
    assert_eq!(pg_count(&agg), 10);
    // Next window: the previous complete window is still reported, merged with this one.
    agg.drain_at(t0 + w, usize::MAX);
    assert_eq!(pg_count(&agg), 10);
    record(5, 2_000);
    agg.drain_at(t0 + w + Duration::from_secs(1), usize::MAX);
    assert_eq!(pg_count(&agg), 15);
    assert_eq!(agg.routes()[0].latency.count, 15);
    // Window 2: window 0 fell out.
    agg.drain_at(t0 + 2 * w, usize::MAX);
    assert_eq!(pg_count(&agg), 5);
    assert!(within(
        agg.queries(1)[0].routes[0].latency.p50_us,
        2_000,
        1.0
    ));
    // Window 4: nothing recent; cumulative counts remain.
    agg.drain_at(t0 + 4 * w, usize::MAX);
    let q = &agg.queries(1)[0];
    assert!(q.routes.is_empty());
    assert_eq!(q.calls, 15);
    assert_eq!(agg.routes()[0].latency.count, 0);
    assert_eq!(agg.routes()[0].calls, 15);
}

#[test]
fn hot_key_scores_decay_with_the_half_life() {
    let t0 = Instant::now();
    let h = Duration::from_secs(30);
    let (rec, mut agg) = new_at(
        StatsConfig {
            half_life: h,
            ..config()
        },
        t0,
    )
    .unwrap();
    let t = TableRef::new(Some("s"), "t");
    for _ in 0..8 {
        rec.record_key(&t, "a", Access::Read);
    }
    agg.drain_at(t0, usize::MAX);
    assert_eq!(agg.hot_keys(Some(&t), 10)[0].score, 8.0);
    for _ in 0..6 {
        rec.record_key(&t, "b", Access::Write);
    }
    agg.drain_at(t0 + h, usize::MAX);
    let keys = agg.hot_keys(Some(&t), 10);
    let got: Vec<(&str, f64)> = keys.iter().map(|k| (&*k.key, k.score)).collect();
    assert_eq!(got, vec![("b", 6.0), ("a", 4.0)]);
    assert_eq!((keys[0].reads, keys[0].writes), (0, 6));
    agg.drain_at(t0 + 3 * h, usize::MAX);
    let got: Vec<f64> = agg.hot_keys(None, 10).iter().map(|k| k.score).collect();
    assert_eq!(got, vec![1.5, 1.0]);
    // The table's score decays the same way: 8 accesses three half-lives ago, 6 two ago.
    let table = &agg.tables(0)[0];
    assert!(
        (table.score - (8.0 / 8.0 + 6.0 / 4.0)).abs() < 1e-9,
        "{table:?}"
    );
}

#[test]
fn decay_survives_many_rebases() {
    let t0 = Instant::now();
    let h = Duration::from_millis(100);
    let (rec, mut agg) = new_at(
        StatsConfig {
            half_life: h,
            ..config()
        },
        t0,
    )
    .unwrap();
    let t = TableRef::new(None, "t");
    // 2000 half-lives (several rebases), a steady key and a key seen once per 100.
    for i in 0..2000u32 {
        rec.record_key(&t, "steady", Access::Read);
        if i % 100 == 0 {
            rec.record_key(&t, "rare", Access::Read);
        }
        agg.drain_at(t0 + h * i, usize::MAX);
    }
    let keys = agg.hot_keys(Some(&t), 2);
    assert_eq!(&*keys[0].key, "steady");
    // One access per half-life converges to 1 + 1/2 + 1/4 + ... = 2.
    assert!((keys[0].score - 2.0).abs() < 1e-9, "{keys:?}");
    assert!(
        keys[1].score.is_finite() && keys[1].score < 1e-20,
        "{keys:?}"
    );
}

#[test]
fn shapes_and_tables_are_bounded_and_evicted() {
    let t0 = Instant::now();
    let cfg = StatsConfig {
        max_shapes: 2,
        ..config()
    };
    let (rec, mut agg) = new_at(cfg, t0).unwrap();
    let a = shape("select a from t");
    let b = shape("select b from t");
    let c = shape("select c from t");
    for s in [&a, &a, &b, &c] {
        rec.record_statement(s, Route::Postgres, Duration::from_micros(5), 0, false);
    }
    agg.drain_at(t0, usize::MAX);
    let counters = agg.counters();
    assert_eq!((counters.shapes, counters.evicted_shapes), (2, 1));
    let texts: Vec<String> = agg
        .queries(10)
        .iter()
        .map(|q| q.normalized.to_string())
        .collect();
    assert_eq!(texts, vec!["select a from t", "select c from t"]);
    // Route totals count evicted shapes too.
    assert_eq!(agg.routes()[0].calls, 4);
}

#[test]
fn long_shape_text_is_cut() {
    let t0 = Instant::now();
    let (rec, mut agg) = new_at(config(), t0).unwrap();
    let cols: Vec<String> = (0..1000).map(|i| format!("côl{i}")).collect();
    let s = shape(&format!("select {} from t", cols.join(", ")));
    assert!(s.normalized.len() > MAX_SHAPE_TEXT);
    rec.record_statement(&s, Route::Postgres, Duration::from_micros(5), 0, false);
    rec.record_statement(&s, Route::Postgres, Duration::from_micros(5), 0, false);
    agg.drain_at(t0, usize::MAX);
    let q = &agg.queries(1)[0];
    assert!(q.normalized.len() <= MAX_SHAPE_TEXT + '…'.len_utf8());
    assert!(q.normalized.ends_with('…'));
    assert_eq!(q.calls, 2);
}

#[test]
fn snapshots_are_published_to_handles() {
    let t0 = Instant::now();
    let cfg = StatsConfig {
        snapshot_keys_per_table: 2,
        ..config()
    };
    let (rec, mut agg) = new_at(cfg, t0).unwrap();
    let handle = agg.handle();
    assert!(handle.snapshot().tables.is_empty());
    let t = TableRef::new(None, "t");
    let u = TableRef::new(None, "u");
    for (table, key, n) in [(&t, "1", 5), (&t, "2", 3), (&t, "3", 1), (&u, "9", 4)] {
        for _ in 0..n {
            rec.record_key(table, key, Access::Read);
        }
    }
    rec.record_statement(
        &shape("select 1"),
        Route::Search,
        Duration::from_micros(7),
        1,
        false,
    );
    agg.drain_at(t0, usize::MAX);
    let before = handle.snapshot();
    agg.publish();
    let snap = handle.snapshot();
    assert!(before.tables.is_empty());
    assert_eq!(snap.taken_at, t0);
    let keys = |table: Option<&TableRef>, limit: usize| -> Vec<String> {
        snap.hot_keys(table, limit)
            .iter()
            .map(|k| format!("{}:{}", k.table, k.key))
            .collect()
    };
    // Two keys per table in the snapshot; the aggregator itself still sees all three.
    assert_eq!(keys(Some(&t), 10), vec!["t:1", "t:2"]);
    assert_eq!(keys(None, 3), vec!["t:1", "u:9", "t:2"]);
    assert_eq!(agg.hot_keys(Some(&t), 10).len(), 3);
    assert!(keys(Some(&TableRef::new(None, "nope")), 10).is_empty());
    assert_eq!(snap.queries(10).len(), 1);
    assert_eq!(snap.routes()[Route::Search.index()].calls, 1);
    assert_eq!(snap.counters.events, 14);
}

#[tokio::test]
async fn run_drains_publishes_and_stops() {
    let (rec, agg) = new(config()).unwrap();
    let handle = agg.handle();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(agg.run(Duration::from_millis(5), stopped));
    let t = TableRef::new(None, "t");
    rec.record_key(&t, "42", Access::Read);
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.snapshot().hot_keys(None, 1).is_empty() {
        assert!(Instant::now() < deadline, "no snapshot published");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Shutdown drains what is left, publishes and returns.
    rec.record_key(&t, "43", Access::Read);
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handle.snapshot().hot_keys(None, 10).len(), 2);
}

#[test]
fn config_is_validated() {
    assert_eq!(config().validate(), Ok(()));
    let bad = |c: StatsConfig| new(c).err();
    assert_eq!(
        bad(StatsConfig {
            half_life: Duration::ZERO,
            ..config()
        }),
        Some(StatsConfigError::Zero("half_life"))
    );
    assert_eq!(
        bad(StatsConfig {
            top_k_per_table: 0,
            ..config()
        }),
        Some(StatsConfigError::Zero("top_k_per_table"))
    );
    assert_eq!(
        bad(StatsConfig {
            channel_capacity: usize::MAX,
            ..config()
        }),
        Some(StatsConfigError::TooLarge {
            name: "channel_capacity",
            max: MAX_CHANNEL_CAPACITY
        })
    );
    assert_eq!(
        bad(StatsConfig {
            max_key_len: 70_000,
            ..config()
        })
        .map(|e| e.to_string()),
        Some("stats max_key_len must be at most 65534".to_string())
    );
}

/// Not a benchmark with assertions: prints the hot-path cost (`--nocapture` to see it).
/// Numbers from an unoptimized test build are pessimistic; run with `--release` for real ones.
/// Calls are timed in rounds that fit the queue, drained (untimed, also reported) in between,
/// so the accepted path and the dropping path are measured separately.
#[test]
fn hot_path_cost() {
    const ROUNDS: u32 = 16;
    const PER_ROUND: u32 = 62_500;
    const CALLS: u32 = ROUNDS * PER_ROUND;
    let table = TableRef::new(Some("public"), "users");
    let keys: Vec<String> = (0..1024).map(|i| (i * 7_919).to_string()).collect();
    let key = |i: u32| keys[(i % 1024) as usize].as_str();
    let s = shape("select * from users where id = 1");
    let ns = |d: Duration, n: u32| d.as_nanos() as f64 / f64::from(n);

    let (rec, mut agg) = new(config()).unwrap();
    let (mut key_time, mut stmt_time, mut drain_time) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for round in 0..ROUNDS {
        let start = Instant::now();
        for i in 0..PER_ROUND {
            rec.record_key(&table, key(round * PER_ROUND + i), Access::Read);
        }
        key_time += start.elapsed();
        let start = Instant::now();
        agg.drain();
        drain_time += start.elapsed();
        let start = Instant::now();
        for i in 0..PER_ROUND {
            let latency = Duration::from_micros(u64::from(i % 1000));
            rec.record_statement(&s, Route::Postgres, latency, 1, false);
        }
        stmt_time += start.elapsed();
        let start = Instant::now();
        agg.drain();
        drain_time += start.elapsed();
    }
    assert_eq!(rec.dropped(), 0);
    assert_eq!(agg.counters().events, 2 * u64::from(CALLS));

    // Saturated: nobody drains, so after 65 536 events every call takes the drop path.
    let (full, _agg) = new(config()).unwrap();
    let start = Instant::now();
    for i in 0..CALLS {
        full.record_key(&table, key(i), Access::Read);
    }
    let full_ns = ns(start.elapsed(), CALLS);
    assert_eq!(full.dropped(), u64::from(CALLS) - 65_536);

    let off = StatsRecorder::disabled();
    let start = Instant::now();
    for i in 0..CALLS {
        std::hint::black_box(&off).record_key(&table, key(i), Access::Read);
    }
    let off_ns = ns(start.elapsed(), CALLS);

    println!(
        "hot path, {CALLS} calls each: record_key {:.1} ns/op, record_statement {:.1} ns/op, \
         record_key with a full queue (dropped) {full_ns:.1} ns/op, disabled {off_ns:.1} ns/op; \
         aggregator (off the hot path) {:.1} ns/event",
        ns(key_time, CALLS),
        ns(stmt_time, CALLS),
        ns(drain_time, 2 * CALLS),
    );
}
