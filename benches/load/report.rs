//! Turning runs into the report: medians over repetitions, ratios against the reference
//! points, a Markdown table for people and a JSON file with every raw number for tools.
//!
//! Ratios are always taken between targets of the same run (DESIGN.md: absolute figures drift
//! between runs, ratios from one run do not). Medians, not means, so one disturbed
//! repetition on a shared 2-core machine does not move the result.

use std::fmt::Write as _;

use crate::pgbench::{Mode, RunOutcome};

/// The target every ratio and added latency is measured against.
pub const REFERENCE: &str = "direct";
/// The target the ratios are about.
pub const SUBJECT: &str = "pgpolyglot";
/// Targets pgpolyglot is compared with, besides [`REFERENCE`]; the last one gives the cost of
/// the access statistics (same proxy, `[stats] enabled = false`).
pub const COMPARED: [&str; 4] = [
    "pgbouncer-session",
    "haproxy",
    "pgpolyglot-stats-off",
    "pgpolyglot-per-core",
];
/// Cache targets, each compared with [`REFERENCE`] and with [`SUBJECT`] (the same proxy
/// with nothing routed away from Postgres).
pub const CACHED: [&str; 4] = [
    "pgpolyglot-cache",
    "pgpolyglot-cache-per-core",
    "pgpolyglot-cache-redis",
    "pgpolyglot-cache-coalesced",
];

/// How one run ended.
#[derive(Debug, Clone)]
pub enum Status {
    Ok(RunOutcome),
    /// Not run: the target cannot do this (the reason is printed in the cell).
    NotApplicable(&'static str),
    Failed(String),
}

/// One pgbench run.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub workload: &'static str,
    pub mode: Mode,
    pub clients: u32,
    pub target: String,
    pub rep: u32,
    pub status: Status,
}

/// The medians of one (workload, mode, clients, target) over its repetitions.
#[derive(Debug, Clone)]
pub enum Summary {
    Ok {
        tps: f64,
        p50_us: f64,
        p99_us: f64,
        /// Repetitions that succeeded (the others failed).
        ok_reps: usize,
    },
    NotApplicable(&'static str),
    Failed(String),
    Missing,
}

/// Everything the report says besides the numbers.
pub struct Header {
    pub date: String,
    pub nproc: usize,
    pub cpu: String,
    /// 1-minute load average before setup and after the last run.
    pub load_before: String,
    pub load_after: String,
    /// `(what, version line)`.
    pub versions: Vec<(String, String)>,
    /// `(environment variable, value used)`.
    pub knobs: Vec<(String, String)>,
    /// Warm-up failures and other things a reader must know.
    pub notes: Vec<String>,
}

/// A workload's rows: the (mode, clients) pairs in run order.
pub struct Section<'a> {
    pub workload: &'static str,
    pub description: &'a str,
    pub modes: &'a [Mode],
    pub clients: &'a [u32],
}

pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Medians over the repetitions of one cell of the matrix.
pub fn summarize(
    runs: &[Measurement],
    workload: &str,
    mode: Mode,
    clients: u32,
    target: &str,
) -> Summary {
    let cell: Vec<&Measurement> = runs
        .iter()
        .filter(|m| {
            m.workload == workload && m.mode == mode && m.clients == clients && m.target == target
        })
        .collect();
    let ok: Vec<RunOutcome> = cell
        .iter()
        .filter_map(|m| match &m.status {
            Status::Ok(o) => Some(*o),
            _ => None,
        })
        .collect();
    if !ok.is_empty() {
        let mut tps: Vec<f64> = ok.iter().map(|o| o.tps).collect();
        let mut p50: Vec<f64> = ok.iter().map(|o| o.p50_us).collect();
        let mut p99: Vec<f64> = ok.iter().map(|o| o.p99_us).collect();
        return Summary::Ok {
            tps: median(&mut tps),
            p50_us: median(&mut p50),
            p99_us: median(&mut p99),
            ok_reps: ok.len(),
        };
    }
    for m in &cell {
        if let Status::NotApplicable(reason) = m.status {
            return Summary::NotApplicable(reason);
        }
    }
    match cell.iter().find_map(|m| match &m.status {
        Status::Failed(e) => Some(e.clone()),
        _ => None,
    }) {
        Some(error) => Summary::Failed(error),
        None => Summary::Missing,
    }
}

fn tps_of(summary: &Summary) -> Option<f64> {
    match summary {
        Summary::Ok { tps, .. } => Some(*tps),
        _ => None,
    }
}

fn p50_of(summary: &Summary) -> Option<f64> {
    match summary {
        Summary::Ok { p50_us, .. } => Some(*p50_us),
        _ => None,
    }
}

/// The text of a non-numeric cell; `None` for a numeric one.
fn special_cell(summary: &Summary) -> Option<String> {
    match summary {
        Summary::Ok { .. } => None,
        Summary::NotApplicable(reason) => Some(format!("n/a ({reason})")),
        Summary::Failed(_) => Some("failed (see notes)".into()),
        Summary::Missing => Some("—".into()),
    }
}

/// Marks a median taken over fewer repetitions than asked for (some failed).
fn partial_mark(summary: &Summary, reps: usize) -> &'static str {
    match summary {
        Summary::Ok { ok_reps, .. } if *ok_reps < reps => "*",
        _ => "",
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    }
}

/// The Markdown report: header, then per workload the throughput, latency and added-latency
/// tables, then notes (failures quoted).
pub fn markdown(
    header: &Header,
    sections: &[Section<'_>],
    targets: &[String],
    runs: &[Measurement],
    reps: usize,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# pgpolyglot passthrough load benchmark\n");
    let _ = writeln!(out, "- date: {}", header.date);
    let _ = writeln!(
        out,
        "- machine: nproc = {}, {}; 1-min load average {} before the run, {} right after \
         it (includes the run's own load)",
        header.nproc, header.cpu, header.load_before, header.load_after
    );
    for (what, version) in &header.versions {
        let _ = writeln!(out, "- {what}: {version}");
    }
    let knobs: Vec<String> = header
        .knobs
        .iter()
        .map(|(k, v)| format!("`{k}={v}`"))
        .collect();
    let _ = writeln!(out, "- knobs: {}", knobs.join(" "));
    let _ = writeln!(
        out,
        "- method: one embedded PostgreSQL (shared_buffers 256MB) behind every \
         target; targets interleaved (order rotated) within each repetition; medians over repetitions; `-j` = min(clients, 2); \
         ratios are TPS ratios from this run; latencies from pgbench's log of a {:.0} % sample of transactions; \
         `*` = median over fewer repetitions (some failed)\n",
        crate::pgbench::LATENCY_SAMPLING * 100.0
    );
    let mut notes = header.notes.clone();
    for section in sections {
        section_markdown(&mut out, section, targets, runs, reps, &mut notes);
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "## Notes\n");
        for note in notes {
            let _ = writeln!(out, "- {}", note.replace('\n', "\n  "));
        }
    }
    out
}

fn section_markdown(
    out: &mut String,
    section: &Section<'_>,
    targets: &[String],
    runs: &[Measurement],
    reps: usize,
    notes: &mut Vec<String>,
) {
    let has = |name: &str| targets.iter().any(|t| t == name);
    let compared: Vec<&str> = [REFERENCE]
        .into_iter()
        .chain(COMPARED)
        .filter(|t| has(SUBJECT) && has(t))
        .collect();
    let _ = writeln!(
        out,
        "## {}: {}\n\n### Throughput (median TPS)\n",
        section.workload, section.description
    );
    let mut head = format!("| mode | clients | {} |", targets.join(" | "));
    let mut rule = format!("|---|---:|{}", "---:|".repeat(targets.len()));
    for c in &compared {
        let _ = write!(head, " {SUBJECT}/{c} |");
        rule.push_str("---:|");
    }
    let cached: Vec<(&str, &str)> = CACHED
        .into_iter()
        .filter(|t| has(t))
        .flat_map(|t| [(t, REFERENCE), (t, SUBJECT)])
        .filter(|(_, base)| has(base))
        .collect();
    for (t, base) in &cached {
        let _ = write!(head, " {t}/{base} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(out, "{head}\n{rule}");
    let mut latency_rows = String::new();
    for &mode in section.modes {
        for &clients in section.clients {
            let summaries: Vec<Summary> = targets
                .iter()
                .map(|t| summarize(runs, section.workload, mode, clients, t))
                .collect();
            let by_name = |name: &str| {
                targets
                    .iter()
                    .position(|t| t == name)
                    .and_then(|i| tps_of(&summaries[i]))
            };
            let mut row = format!("| {} | {clients} |", mode.as_str());
            let mut lat = format!("| {} | {clients} |", mode.as_str());
            for (target, s) in targets.iter().zip(&summaries) {
                if let Summary::Failed(e) = s {
                    notes.push(format!(
                        "{} {} {clients} clients via {target} failed: {e}",
                        section.workload,
                        mode.as_str()
                    ));
                }
                let mark = partial_mark(s, reps);
                match (special_cell(s), s) {
                    (Some(text), _) => {
                        let _ = write!(row, " {text} |");
                        let _ = write!(lat, " {text} |");
                    }
                    (
                        None,
                        Summary::Ok {
                            tps,
                            p50_us,
                            p99_us,
                            ..
                        },
                    ) => {
                        let _ = write!(row, " {tps:.0}{mark} |");
                        let _ = write!(lat, " {p50_us:.0} / {p99_us:.0}{mark} |");
                    }
                    (None, _) => {}
                }
            }
            for c in &compared {
                let _ = write!(row, " {} |", ratio(by_name(SUBJECT), by_name(c)));
            }
            for (t, base) in &cached {
                let _ = write!(row, " {} |", ratio(by_name(t), by_name(base)));
            }
            let _ = writeln!(out, "{row}");
            let _ = writeln!(latency_rows, "{lat}");
        }
    }
    let _ = writeln!(
        out,
        "\n### Latency (median over repetitions of each run's p50 / p99, µs)\n"
    );
    let _ = writeln!(
        out,
        "| mode | clients | {} |\n|---|---:|{}",
        targets.join(" | "),
        "---:|".repeat(targets.len())
    );
    let _ = writeln!(out, "{latency_rows}");
    added_latency(out, section, targets, runs);
}

/// Median p50 at 1 client minus direct's: what one hop adds to a lone client's query.
fn added_latency(
    out: &mut String,
    section: &Section<'_>,
    targets: &[String],
    runs: &[Measurement],
) {
    if !section.clients.contains(&1) || !targets.iter().any(|t| t == REFERENCE) {
        return;
    }
    let hops: Vec<&String> = targets.iter().filter(|t| *t != REFERENCE).collect();
    if hops.is_empty() {
        return;
    }
    let names: Vec<&str> = hops.iter().map(|t| t.as_str()).collect();
    let _ = writeln!(
        out,
        "### Added median latency at 1 client (p50 minus direct's, µs)\n\n\
         | mode | {} |\n|---|{}",
        names.join(" | "),
        "---:|".repeat(hops.len())
    );
    for &mode in section.modes {
        let direct = p50_of(&summarize(runs, section.workload, mode, 1, REFERENCE));
        let mut row = format!("| {} |", mode.as_str());
        for target in &hops {
            let hop = p50_of(&summarize(runs, section.workload, mode, 1, target));
            match (hop, direct) {
                (Some(h), Some(d)) => {
                    let _ = write!(row, " {:+.0} |", h - d);
                }
                _ => row.push_str(" — |"),
            }
        }
        let _ = writeln!(out, "{row}");
    }
    out.push('\n');
}

/// A JSON string literal.
pub fn json_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_pairs(pairs: &[(String, String)]) -> String {
    let items: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}: {}", json_str(k), json_str(v)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// Every run with its raw numbers, plus the medians, as JSON.
pub fn json(
    header: &Header,
    sections: &[Section<'_>],
    targets: &[String],
    runs: &[Measurement],
) -> String {
    let mut out = String::from("{\n");
    let _ = writeln!(out, "  \"date\": {},", json_str(&header.date));
    let _ = writeln!(out, "  \"nproc\": {},", header.nproc);
    let _ = writeln!(out, "  \"cpu\": {},", json_str(&header.cpu));
    let _ = writeln!(out, "  \"load_before\": {},", json_str(&header.load_before));
    let _ = writeln!(out, "  \"load_after\": {},", json_str(&header.load_after));
    let _ = writeln!(out, "  \"versions\": {},", json_pairs(&header.versions));
    let _ = writeln!(out, "  \"knobs\": {},", json_pairs(&header.knobs));
    let notes: Vec<String> = header.notes.iter().map(|n| json_str(n)).collect();
    let _ = writeln!(out, "  \"notes\": [{}],", notes.join(", "));
    let run_items: Vec<String> = runs.iter().map(run_json).collect();
    let _ = writeln!(
        out,
        "  \"runs\": [\n    {}\n  ],",
        run_items.join(",\n    ")
    );
    let mut summary_items = Vec::new();
    for section in sections {
        for &mode in section.modes {
            for &clients in section.clients {
                for target in targets {
                    let s = summarize(runs, section.workload, mode, clients, target);
                    let key = format!(
                        "\"workload\": {}, \"mode\": {}, \"clients\": {clients}, \"target\": {}",
                        json_str(section.workload),
                        json_str(mode.as_str()),
                        json_str(target)
                    );
                    summary_items.push(format!("{{{key}, {}}}", summary_json(&s)));
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "  \"summary\": [\n    {}\n  ]\n}}",
        summary_items.join(",\n    ")
    );
    out
}

fn run_json(m: &Measurement) -> String {
    let key = format!(
        "\"workload\": {}, \"mode\": {}, \"clients\": {}, \"target\": {}, \"rep\": {}",
        json_str(m.workload),
        json_str(m.mode.as_str()),
        m.clients,
        json_str(&m.target),
        m.rep
    );
    let status = match &m.status {
        Status::Ok(o) => format!(
            "\"status\": \"ok\", \"tps\": {:.3}, \"p50_us\": {}, \"p99_us\": {}, \"transactions\": {}",
            o.tps, o.p50_us, o.p99_us, o.transactions
        ),
        Status::NotApplicable(reason) => {
            format!("\"status\": \"n/a\", \"reason\": {}", json_str(reason))
        }
        Status::Failed(e) => format!("\"status\": \"failed\", \"error\": {}", json_str(e)),
    };
    format!("{{{key}, {status}}}")
}

fn summary_json(s: &Summary) -> String {
    match s {
        Summary::Ok {
            tps,
            p50_us,
            p99_us,
            ok_reps,
        } => format!(
            "\"status\": \"ok\", \"median_tps\": {tps:.3}, \"median_p50_us\": {p50_us}, \
             \"median_p99_us\": {p99_us}, \"ok_reps\": {ok_reps}"
        ),
        Summary::NotApplicable(reason) => {
            format!("\"status\": \"n/a\", \"reason\": {}", json_str(reason))
        }
        Summary::Failed(e) => format!("\"status\": \"failed\", \"error\": {}", json_str(e)),
        Summary::Missing => "\"status\": \"missing\"".into(),
    }
}
