//! What the classifier knows about functions, by name.
//!
//! A statement may be served outside Postgres only if every function in it is known to be
//! free of side effects and independent of time, randomness and session state. Anything not
//! on the safe list is *unknown* (a user function may write), which is as disqualifying as
//! volatile. Names are matched after identifier folding; a schema qualifier other than
//! `pg_catalog` makes a name unknown, since only `pg_catalog` is sure to hold the built-in.

/// How a function name classifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FnClass {
    /// Immutable or stable, no side effects, no dependence on the session's identity.
    Safe,
    /// An aggregate (safe otherwise).
    Aggregate,
    /// A window-only function (safe otherwise).
    Window,
    /// Time, randomness, sequences, locks, session identity, side effects.
    Volatile,
    /// Not known: may do anything.
    Unknown,
}

const VOLATILE: &[&str] = &[
    "clock_timestamp",
    "current_catalog",
    "current_database",
    "current_date",
    "current_query",
    "current_role",
    "current_schema",
    "current_schemas",
    "current_setting",
    "current_time",
    "current_timestamp",
    "current_user",
    "currval",
    "gen_random_uuid",
    "inet_client_addr",
    "inet_client_port",
    "inet_server_addr",
    "inet_server_port",
    "lastval",
    "localtime",
    "localtimestamp",
    "nextval",
    "now",
    "pg_backend_pid",
    "pg_cancel_backend",
    "pg_current_wal_lsn",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "pg_export_snapshot",
    "pg_notify",
    "pg_postmaster_start_time",
    "pg_read_file",
    "pg_reload_conf",
    "pg_switch_wal",
    "pg_terminate_backend",
    "random",
    "random_normal",
    "session_user",
    "set_config",
    "setseed",
    "setval",
    "statement_timestamp",
    "timeofday",
    "transaction_timestamp",
    "txid_current",
    "txid_current_if_assigned",
    "user",
    "uuidv4",
    "uuidv7",
];

/// Prefixes of volatile families (advisory locks, sleeps, statistics, large objects, ...).
const VOLATILE_PREFIXES: &[&str] = &[
    "dblink",
    "lo_",
    "pg_advisory",
    "pg_sleep",
    "pg_stat_",
    "pg_try_advisory",
    "txid_",
    "uuid_generate",
];

const AGGREGATES: &[&str] = &[
    "any_value",
    "array_agg",
    "avg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "corr",
    "count",
    "covar_pop",
    "covar_samp",
    "every",
    "json_agg",
    "json_object_agg",
    "jsonb_agg",
    "jsonb_object_agg",
    "max",
    "min",
    "mode",
    "percentile_cont",
    "percentile_disc",
    "range_agg",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "sum",
    "var_pop",
    "var_samp",
    "variance",
    "xmlagg",
];

const WINDOW: &[&str] = &[
    "cume_dist",
    "dense_rank",
    "first_value",
    "lag",
    "last_value",
    "lead",
    "nth_value",
    "ntile",
    "percent_rank",
    "rank",
    "row_number",
];

/// Built-ins that are immutable, or stable without depending on who runs them.
const SAFE: &[&str] = &[
    "abs",
    "array_length",
    "array_lower",
    "array_position",
    "array_positions",
    "array_to_string",
    "array_upper",
    "ascii",
    "bit_length",
    "btrim",
    "cardinality",
    "cbrt",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "chr",
    "coalesce",
    "concat",
    "concat_ws",
    "date_part",
    "date_trunc",
    "decode",
    "div",
    "encode",
    "exp",
    "extract",
    "floor",
    "format",
    "generate_series",
    "generate_subscripts",
    "greatest",
    "initcap",
    "json_array_elements",
    "json_array_elements_text",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_extract_path",
    "json_each",
    "json_each_text",
    "json_extract_path_text",
    "json_typeof",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_extract_path",
    "jsonb_each",
    "jsonb_each_text",
    "jsonb_extract_path_text",
    "jsonb_set",
    "jsonb_typeof",
    "least",
    "left",
    "length",
    "ln",
    "log",
    "log10",
    "lower",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "make_time",
    "md5",
    "mod",
    "nullif",
    "num_nonnulls",
    "num_nulls",
    "octet_length",
    "phraseto_tsquery",
    "plainto_tsquery",
    "position",
    "pow",
    "power",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_to_json",
    "rpad",
    "rtrim",
    "setweight",
    "sha256",
    "sign",
    "split_part",
    "sqrt",
    "starts_with",
    "string_to_array",
    "string_to_table",
    "strpos",
    "substr",
    "substring",
    "to_char",
    "to_date",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_timestamp",
    "to_tsquery",
    "to_tsvector",
    "translate",
    "trim",
    "trunc",
    "ts_headline",
    "ts_rank",
    "ts_rank_cd",
    "unnest",
    "upper",
    "websearch_to_tsquery",
];

/// Classifies a function by its (folded) name parts, e.g. `["pg_catalog", "lower"]`.
pub(crate) fn classify_function(parts: &[&str]) -> FnClass {
    let name = match parts {
        [name] => *name,
        ["pg_catalog", name] => *name,
        _ => return FnClass::Unknown,
    };
    if VOLATILE.contains(&name) || VOLATILE_PREFIXES.iter().any(|p| name.starts_with(p)) {
        FnClass::Volatile
    } else if AGGREGATES.contains(&name) {
        FnClass::Aggregate
    } else if WINDOW.contains(&name) {
        FnClass::Window
    } else if SAFE.contains(&name) {
        FnClass::Safe
    } else {
        FnClass::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(classify_function(&["lower"]), FnClass::Safe);
        assert_eq!(classify_function(&["pg_catalog", "lower"]), FnClass::Safe);
        assert_eq!(classify_function(&["myschema", "lower"]), FnClass::Unknown);
        assert_eq!(classify_function(&["LOWER"]), FnClass::Unknown);
        assert_eq!(classify_function(&["now"]), FnClass::Volatile);
        assert_eq!(
            classify_function(&["pg_advisory_xact_lock"]),
            FnClass::Volatile
        );
        assert_eq!(classify_function(&["count"]), FnClass::Aggregate);
        assert_eq!(classify_function(&["row_number"]), FnClass::Window);
        assert_eq!(classify_function(&["my_func"]), FnClass::Unknown);
    }

    #[test]
    fn lists_are_disjoint() {
        for n in SAFE.iter().chain(AGGREGATES).chain(WINDOW) {
            assert!(!VOLATILE.contains(n), "{n}");
            assert!(!VOLATILE_PREFIXES.iter().any(|p| n.starts_with(p)), "{n}");
        }
    }
}
