//! The dashboard at `/`, rendered by a real browser: a workload runs through the proxy, then
//! headless Chromium loads the page, and the test checks the DOM it produced (charts drawn
//! with data, hot keys of the workload listed) and saves the screenshot the README shows
//! (`docs/dashboard.png`).
//!
//! Needs Debian's `chromium` package (or `CHROMIUM=/path/to/chrome`). Without it the test
//! fails with an install hint rather than skipping: a skipped check looks like a passing one.

mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value as Json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Keys 1000..2000; the first few take most of the reads, so they must top the hot keys.
const FIRST_KEY: i32 = 1000;
const KEYS: i32 = 1000;
const HOT_KEYS: i32 = 5;
const CLIENTS: usize = 4;
/// How long the workload runs before the browser first loads the page.
const WORKLOAD: Duration = Duration::from_secs(4);
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_renders_live_data_in_chromium() {
    let chromium = chromium_binary();
    let pg = common::cluster().await;
    let mut config = common::proxy_config(&pg.url(common::APP_USER, common::APP_DB));
    config.http = "127.0.0.1:0".into();
    let proxy = common::proxy_with(config).await;
    let http = proxy.http_addr().expect("the HTTP endpoint is enabled");

    // Assets are served with the right types and are never cached stale.
    for (path, ty) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
    ] {
        let (status, headers, _) = http_get(http, path).await;
        assert_eq!(status, 200, "GET {path}");
        assert!(
            headers.contains(&format!("content-type: {ty}")),
            "GET {path}: {headers}"
        );
        assert!(headers.contains("cache-control: no-cache"), "GET {path}");
    }

    let proxy_url = format!(
        "postgres://{}@{}/{}",
        common::APP_USER,
        proxy.local_addr(),
        common::APP_DB
    );
    let setup = connect(&proxy_url).await;
    setup
        .batch_execute(&format!(
            "CREATE TABLE dash_items (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL);
             INSERT INTO dash_items
               SELECT g, 'item ' || g, 0 FROM generate_series({FIRST_KEY}, {}) g;",
            FIRST_KEY + KEYS - 1
        ))
        .await
        .unwrap_or_else(|e| panic!("creating dash_items: {}", common::pg_error(&e)));

    // The workload keeps running while Chromium loads the page, so the charts and the
    // screenshot show live traffic rather than its tail.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|seed| {
            let url = proxy_url.clone();
            let stop = stop.clone();
            tokio::spawn(async move { workload(&url, seed as u64, &stop).await })
        })
        .collect();
    // Several history samples and statistics snapshots (both every second).
    tokio::time::sleep(WORKLOAD).await;
    if clients.iter().any(|c| c.is_finished()) {
        stop.store(true, Relaxed);
        for c in clients {
            c.await.expect("a workload client panicked");
        }
        panic!("a workload client stopped early");
    }

    // What the page was given to draw, for a readable failure if a chart comes out empty.
    let (_, _, history_body) = http_get(http, "/api/history").await;
    let history: Json = serde_json::from_str(&history_body).expect("/api/history is JSON");
    let samples = history["samples"].as_array().map_or(0, Vec::len);
    assert!(
        samples >= 3,
        "history has {samples} samples: {history_body}"
    );

    let url = format!("http://{http}/");
    let profile = tempfile::tempdir().expect("temporary Chromium profile");
    let dom = run_chromium(
        &chromium,
        profile.path(),
        &["--virtual-time-budget=6000", "--dump-dom", &url],
    )
    .await;
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    let body_tag = tag_at(&dom, "<body").unwrap_or_default();
    assert!(
        body_tag.contains(r#"data-ready="1""#),
        "the page never finished a render; <body> is {body_tag:?}; status: {:?}",
        text_of(&dom, r#"id="status""#)
    );

    let mix = chart_attrs(&dom, "chart-mix");
    assert!(
        mix.points > 0 && mix.nonzero > 0,
        "routing-mix chart drew {mix:?} during the workload: no statements/s > 0 in the \
         history, so the per-route counters (metrics.routes) are not being incremented. \
         /api/history: {history_body}"
    );
    let latency = chart_attrs(&dom, "chart-latency");
    assert!(
        latency.points > 0,
        "latency chart drew no points ({latency:?}): no route has p50/p99 in the \
         statistics snapshot. /api/routes: {}",
        http_get(http, "/api/routes").await.2
    );
    let hit = chart_attrs(&dom, "chart-hit");
    assert!(hit.points > 0, "hit-ratio chart drew {hit:?}");

    let hot = section(&dom, r#"id="hot-keys""#);
    let listed: Vec<i32> = attr_values(hot, "data-key")
        .iter()
        .filter_map(|k| k.parse().ok())
        .collect();
    assert!(
        listed
            .iter()
            .any(|k| (FIRST_KEY..FIRST_KEY + HOT_KEYS).contains(k)),
        "the hot-keys panel lists none of the workload's hot keys {FIRST_KEY}..{}: {hot}",
        FIRST_KEY + HOT_KEYS
    );
    assert!(
        attr_values(hot, "data-table")
            .iter()
            .any(|t| t.contains("dash_items")),
        "hot keys are not attributed to dash_items: {hot}"
    );

    // The stores panel says honestly what is not running.
    let feeds = section(&dom, r#"id="feeds""#);
    assert!(
        feeds.contains("change feed: not running in this build"),
        "{feeds}"
    );

    let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
    std::fs::create_dir_all(png.parent().expect("docs/ has a parent")).expect("creating docs/");
    let _ = std::fs::remove_file(&png);
    let shot_profile = tempfile::tempdir().expect("temporary Chromium profile");
    let shot = format!("--screenshot={}", png.display());
    run_chromium(
        &chromium,
        shot_profile.path(),
        &[
            "--hide-scrollbars",
            "--window-size=1280,900",
            "--virtual-time-budget=6000",
            &shot,
            &url,
        ],
    )
    .await;
    let bytes = std::fs::read(&png)
        .unwrap_or_else(|e| panic!("Chromium wrote no screenshot at {}: {e}", png.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        png.display()
    );
    assert!(
        bytes.len() > 10 * 1024,
        "{} is only {} bytes",
        png.display(),
        bytes.len()
    );

    stop.store(true, Relaxed);
    let mut reads = 0u64;
    for c in clients {
        reads += common::within("the workload", 60, c)
            .await
            .expect("a workload client panicked");
    }
    assert!(reads > 1_000, "only {reads} reads");

    setup
        .batch_execute("DROP TABLE dash_items")
        .await
        .unwrap_or_else(|e| panic!("dropping dash_items: {}", common::pg_error(&e)));
    drop(setup);
    proxy.shutdown().await;
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = common::within(
        "connecting through the proxy",
        30,
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    .unwrap_or_else(|e| panic!("connecting to {url}: {}", common::pg_error(&e)));
    tokio::spawn(conn);
    client
}

/// One client until `stop`: point reads (80% on the [`HOT_KEYS`] hottest keys), and an
/// update every 50 statements. Returns the number of reads.
async fn workload(url: &str, seed: u64, stop: &AtomicBool) -> u64 {
    let client = connect(url).await;
    let read = client
        .prepare("SELECT * FROM dash_items WHERE id = $1")
        .await
        .unwrap_or_else(|e| panic!("prepare: {}", common::pg_error(&e)));
    let write = client
        .prepare("UPDATE dash_items SET qty = qty + 1 WHERE id = $1")
        .await
        .unwrap_or_else(|e| panic!("prepare: {}", common::pg_error(&e)));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut reads = 0u64;
    let mut n = 0u64;
    while !stop.load(Relaxed) {
        let key = if rng.gen_bool(0.8) {
            FIRST_KEY + rng.gen_range(0..HOT_KEYS)
        } else {
            FIRST_KEY + rng.gen_range(0..KEYS)
        };
        n += 1;
        if n.is_multiple_of(50) {
            client
                .execute(&write, &[&key])
                .await
                .unwrap_or_else(|e| panic!("update: {}", common::pg_error(&e)));
        } else {
            let rows = client
                .query(&read, &[&key])
                .await
                .unwrap_or_else(|e| panic!("select: {}", common::pg_error(&e)));
            assert_eq!(rows.len(), 1, "key {key}");
            reads += 1;
        }
    }
    reads
}

/// `$CHROMIUM`, else `chromium` on the PATH; panics with an install hint when absent.
fn chromium_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`chromium` is not installed (needed to render the dashboard): \
             apt-get install chromium, or set CHROMIUM=/path/to/chrome"
        )
    })
}

/// Runs headless Chromium with `args` and a throwaway profile; panics if it fails or takes
/// longer than [`BROWSER_TIMEOUT`] (then its whole process group is killed: Debian's
/// `chromium` is a wrapper script that does not always exec the browser).
async fn run_chromium(binary: &Path, profile: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .process_group(0)
    .kill_on_drop(true);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    let pid = child.id();
    match tokio::time::timeout(BROWSER_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            assert!(
                out.status.success(),
                "chromium {args:?} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            out
        }
        Ok(Err(e)) => panic!("waiting for chromium: {e}"),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            panic!("chromium {args:?} did not finish within {BROWSER_TIMEOUT:?}; killed");
        }
    }
}

/// A minimal HTTP/1.1 GET: (status, lowercased header block, body). Enough for the
/// endpoint's own fixed-length responses; avoids an HTTP client dependency.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    common::within(&format!("GET {path}"), 10, async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("sending request");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("reading response");
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("GET {path}: no header end in {raw:?}"));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("GET {path}: bad status line in {head:?}"));
        (status, head.to_ascii_lowercase(), body.to_string())
    })
    .await
}

/// What a chart's `<svg>` says it drew.
#[derive(Debug, Default)]
struct ChartAttrs {
    points: u64,
    nonzero: u64,
}

/// The attributes of the first `<svg>` after the element with `id`.
fn chart_attrs(dom: &str, id: &str) -> ChartAttrs {
    let marker = format!(r#"id="{id}""#);
    let Some(at) = dom.find(&marker) else {
        panic!("no element {marker} in the DOM")
    };
    let Some(svg) = tag_at(&dom[at..], "<svg") else {
        panic!("no <svg> drawn in #{id}")
    };
    let num = |name: &str| {
        attr_values(svg, name)
            .first()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("#{id} svg has no {name}: {svg}"))
    };
    ChartAttrs {
        points: num("data-points"),
        nonzero: num("data-nonzero"),
    }
}

/// The first start tag beginning with `open` (e.g. `<body`), up to its `>`.
fn tag_at<'a>(html: &'a str, open: &str) -> Option<&'a str> {
    let start = html.find(open)?;
    let end = html[start..].find('>')?;
    Some(&html[start..=start + end])
}

/// From the element carrying `marker` to the end of its panel (the enclosing `</article>`).
fn section<'a>(dom: &'a str, marker: &str) -> &'a str {
    let Some(start) = dom.find(marker) else {
        panic!("no element {marker} in the DOM")
    };
    let end = dom[start..]
        .find("</article>")
        .map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

/// The text following `marker` up to the next `<`, e.g. a status line.
fn text_of<'a>(dom: &'a str, marker: &str) -> Option<&'a str> {
    let at = dom.find(marker)?;
    let rest = &dom[at..];
    let open = rest.find('>')? + 1;
    let close = rest[open..].find('<')?;
    Some(&rest[open..open + close])
}

/// Every value of `name="..."` in `html` (values as Chromium serializes them).
fn attr_values<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let needle = format!(r#" {name}=""#);
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&needle) {
        rest = &rest[i + needle.len()..];
        if let Some(end) = rest.find('"') {
            out.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
    out
}
