//! A small result set: what every admin view produces, rendered as a PostgreSQL result
//! set for the admin console and as JSON for the HTTP API, so both always show the same data.

use serde_json::{Map, Value as Json};

/// Column types an admin view uses (each maps to one PostgreSQL type OID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Int8,
    Float8,
    Bool,
}

impl ColumnType {
    /// PostgreSQL type OID for the RowDescription.
    pub fn oid(self) -> u32 {
        match self {
            ColumnType::Text => 25,
            ColumnType::Int8 => 20,
            ColumnType::Float8 => 701,
            ColumnType::Bool => 16,
        }
    }

    /// `typlen` for the RowDescription.
    pub fn size(self) -> i16 {
        match self {
            ColumnType::Text => -1,
            ColumnType::Int8 | ColumnType::Float8 => 8,
            ColumnType::Bool => 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
}

/// One cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Cell {
    /// The value in PostgreSQL's text format (`None` for NULL).
    pub fn to_pg_text(&self) -> Option<String> {
        match self {
            Cell::Null => None,
            Cell::Text(s) => Some(s.clone()),
            Cell::Int(i) => Some(i.to_string()),
            Cell::Float(f) if f.is_nan() => Some("NaN".into()),
            Cell::Float(f) if f.is_infinite() => Some(if *f > 0.0 {
                "Infinity".into()
            } else {
                "-Infinity".into()
            }),
            // Rounded for reading; the JSON API carries the full value.
            Cell::Float(f) => Some(format!("{}", (f * 1000.0).round() / 1000.0)),
            Cell::Bool(b) => Some(if *b { "t" } else { "f" }.into()),
        }
    }

    fn to_json(&self) -> Json {
        match self {
            Cell::Null => Json::Null,
            Cell::Text(s) => Json::String(s.clone()),
            Cell::Int(i) => Json::from(*i),
            Cell::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
            Cell::Bool(b) => Json::Bool(*b),
        }
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::Text(s.to_string())
    }
}
impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::Text(s)
    }
}
impl From<i64> for Cell {
    fn from(i: i64) -> Self {
        Cell::Int(i)
    }
}
impl From<u64> for Cell {
    fn from(i: u64) -> Self {
        Cell::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}
impl From<usize> for Cell {
    fn from(i: usize) -> Self {
        Cell::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Cell {
    fn from(f: f64) -> Self {
        Cell::Float(f)
    }
}
impl From<bool> for Cell {
    fn from(b: bool) -> Self {
        Cell::Bool(b)
    }
}
impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(v: Option<T>) -> Self {
        v.map_or(Cell::Null, Into::into)
    }
}

/// Columns plus rows; every row has one cell per column.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResultTable {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

impl ResultTable {
    pub fn new(columns: &[(&'static str, ColumnType)]) -> Self {
        ResultTable {
            columns: columns
                .iter()
                .map(|&(name, ty)| Column { name, ty })
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Append a row. A row of the wrong width is padded with NULLs or cut, never a panic.
    pub fn push(&mut self, mut row: Vec<Cell>) {
        row.resize(self.columns.len(), Cell::Null);
        self.rows.push(row);
    }

    /// `[{"column": value, ...}, ...]`.
    pub fn to_json(&self) -> Json {
        Json::Array(
            self.rows
                .iter()
                .map(|row| {
                    let mut obj = Map::new();
                    for (c, v) in self.columns.iter().zip(row) {
                        obj.insert(c.name.to_string(), v.to_json());
                    }
                    Json::Object(obj)
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_text() {
        let mut t = ResultTable::new(&[
            ("name", ColumnType::Text),
            ("n", ColumnType::Int8),
            ("f", ColumnType::Float8),
        ]);
        t.push(vec!["a".into(), 3i64.into(), 0.12345.into()]);
        t.push(vec![Cell::Null]);
        assert_eq!(
            t.to_json().to_string(),
            r#"[{"f":0.12345,"n":3,"name":"a"},{"f":null,"n":null,"name":null}]"#
        );
        assert_eq!(t.rows[0][2].to_pg_text().as_deref(), Some("0.123"));
        assert_eq!(Cell::Bool(true).to_pg_text().as_deref(), Some("t"));
        assert_eq!(Cell::Null.to_pg_text(), None);
    }
}
