//! What travels from the hot path to the aggregator, kept small: the channel preallocates
//! `channel_capacity` slots of `size_of::<Event>()` bytes (at most 40, plus the queue's own
//! 8-byte stamp), and a key event costs exactly one heap allocation (table and key text
//! packed into one `Box<str>`).

use std::sync::Arc;

use crate::sql::Shape;

/// How a key was accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write,
}

/// Where a statement was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    Postgres,
    Cache,
    Search,
}

impl Route {
    /// Every route, in [`Route::index`] order.
    pub const ALL: [Route; 3] = [Route::Postgres, Route::Cache, Route::Search];

    /// Position in [`Route::ALL`] (array index for per-route data).
    pub fn index(self) -> usize {
        match self {
            Route::Postgres => 0,
            Route::Cache => 1,
            Route::Search => 2,
        }
    }

    /// Lowercase name, for metric labels and result sets.
    pub fn name(self) -> &'static str {
        match self {
            Route::Postgres => "postgres",
            Route::Cache => "cache",
            Route::Search => "search",
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug)]
pub(crate) enum Event {
    Key(KeyEvent),
    Statement(StatementEvent),
}

/// `schema ++ name ++ key` in one allocation; the lengths say where each part ends.
#[derive(Debug)]
pub(crate) struct KeyEvent {
    packed: Box<str>,
    /// `u16::MAX` when the table name is unqualified.
    schema_len: u16,
    name_len: u16,
    pub(crate) access: Access,
}

const NO_SCHEMA: u16 = u16::MAX;

impl KeyEvent {
    /// `None` when a part is too long to describe with `u16` lengths (the recorder rejects
    /// such inputs earlier anyway).
    pub(crate) fn new(schema: Option<&str>, name: &str, key: &str, access: Access) -> Option<Self> {
        let schema_len = match schema {
            Some(s) => u16::try_from(s.len()).ok().filter(|&l| l != NO_SCHEMA)?,
            None => NO_SCHEMA,
        };
        let name_len = u16::try_from(name.len()).ok()?;
        let s = schema.unwrap_or("");
        let mut packed = String::with_capacity(s.len() + name.len() + key.len());
        packed.push_str(s);
        packed.push_str(name);
        packed.push_str(key);
        Some(KeyEvent {
            packed: packed.into_boxed_str(),
            schema_len,
            name_len,
            access,
        })
    }

    /// `(schema, table name, key)`.
    pub(crate) fn parts(&self) -> (Option<&str>, &str, &str) {
        let s = if self.schema_len == NO_SCHEMA {
            0
        } else {
            usize::from(self.schema_len)
        };
        let n = s + usize::from(self.name_len);
        let schema = (self.schema_len != NO_SCHEMA).then(|| self.packed.get(..s).unwrap_or(""));
        let name = self.packed.get(s..n).unwrap_or("");
        let key = self.packed.get(n..).unwrap_or("");
        (schema, name, key)
    }
}

#[derive(Debug)]
pub(crate) struct StatementEvent {
    pub(crate) shape: Arc<Shape>,
    pub(crate) route: Route,
    /// Microseconds.
    pub(crate) latency_us: u64,
    pub(crate) rows: u64,
    pub(crate) error: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_unpacks() {
        let e = KeyEvent::new(Some("public"), "users", "42", Access::Read).unwrap();
        assert_eq!(e.parts(), (Some("public"), "users", "42"));
        let e = KeyEvent::new(None, "users", "", Access::Write).unwrap();
        assert_eq!(e.parts(), (None, "users", ""));
        let e = KeyEvent::new(Some(""), "tâble", "ключ", Access::Write).unwrap();
        assert_eq!(e.parts(), (Some(""), "tâble", "ключ"));
        assert!(KeyEvent::new(None, &"x".repeat(70_000), "1", Access::Read).is_none());
        assert!(std::mem::size_of::<Event>() <= 40);
    }
}
