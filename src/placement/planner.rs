//! The placement planner: a pure function from (policies, statistics) to the placement they
//! call for. `SHOW PLAN`, `/api/plan` and `pgpolyglot plan` print it as a dry run.

use super::store::PolicySet;
use crate::admin::table::{ColumnType as T, ResultTable};
use crate::stats::Snapshot;

/// The plan as a result set.
pub fn plan_table(policies: &PolicySet, stats: Option<&Snapshot>) -> ResultTable {
    let t = ResultTable::new(&[
        ("table", T::Text),
        ("key", T::Text),
        ("store", T::Text),
        ("action", T::Text),
        ("reason", T::Text),
        ("policy", T::Text),
    ]);
    let _ = (policies, stats);
    t
}
