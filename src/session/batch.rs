//! One extended-protocol batch read whole from the client's buffer:
//! `[Parse] Bind [Describe] Execute Sync`, the shape drivers send for a statement run
//! once (psycopg, node-postgres, JDBC's first executions, `pgbench -M extended`) or a
//! prepared one run again (`Bind Execute Sync`). The cache answers such a batch itself; the
//! search store rewrites its Bind. Anything else (a batch split across reads, a Describe of
//! a statement, two Executes, a malformed frame) reads as `None` and is relayed as usual.

use super::bind::{parse_param_types, Bind};
use crate::protocol::frames::{read_cstr, HEADER_LEN};

/// A complete frame at the start of `buf`: (type, body, total length).
pub fn frame_at(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    let header = buf.get(..HEADER_LEN)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len < 4 {
        return None;
    }
    let total = 1 + len;
    Some((header[0], buf.get(HEADER_LEN..total)?, total))
}

/// The batch's leading Parse.
#[derive(Debug)]
pub struct ParseFrame<'a> {
    pub name: &'a [u8],
    pub sql: &'a [u8],
    /// Parameter types it declares (0: inferred by the server).
    pub types: Box<[u32]>,
    /// The whole message, header included.
    pub frame: &'a [u8],
}

/// The batch's Describe, between its Bind and its Execute.
#[derive(Debug, Clone, Copy)]
pub struct Describe<'a> {
    /// Of the Bind's statement (tokio-postgres's `query_typed`), not of the portal.
    pub statement: bool,
    /// The whole message, header included.
    pub frame: &'a [u8],
}

#[derive(Debug)]
pub struct ExtendedBatch<'a> {
    pub parse: Option<ParseFrame<'a>>,
    pub bind: Bind<'a>,
    /// The Bind message's body.
    pub bind_body: &'a [u8],
    /// A Describe of the bound portal or of its statement, if there is one.
    pub describe: Option<Describe<'a>>,
    /// The Execute message, header included.
    pub execute: &'a [u8],
    /// Execute's row limit (0: all rows).
    pub max_rows: i32,
    /// Bytes of the buffer the batch takes, Sync included.
    pub len: usize,
}

impl<'a> ExtendedBatch<'a> {
    /// Reads the batch at the start of `buf`; `None` unless it is exactly that shape, whole.
    pub fn read(buf: &'a [u8]) -> Option<ExtendedBatch<'a>> {
        let mut at = 0;
        let (first, first_body, first_len) = frame_at(buf)?;
        let parse = if first == b'P' {
            let (name, rest) = read_cstr(first_body)?;
            let (sql, rest) = read_cstr(rest)?;
            let types = parse_param_types(rest);
            if rest.len() != 2 + 4 * types.len() {
                return None;
            }
            at = first_len;
            Some(ParseFrame {
                name,
                sql,
                types,
                frame: &buf[..first_len],
            })
        } else {
            None
        };
        let (typ, bind_body, len) = frame_at(&buf[at..])?;
        if typ != b'B' {
            return None;
        }
        let bind = Bind::parse(bind_body)?;
        at += len;
        let mut describe = None;
        let (mut typ, mut body, mut len) = frame_at(&buf[at..])?;
        if typ == b'D' {
            let (kind, rest) = body.split_first()?;
            let described = match kind {
                b'P' => bind.portal,
                b'S' => bind.statement,
                _ => return None,
            };
            if read_cstr(rest)?.0 != described {
                return None;
            }
            describe = Some(Describe {
                statement: *kind == b'S',
                frame: &buf[at..at + len],
            });
            at += len;
            (typ, body, len) = frame_at(&buf[at..])?;
        }
        if typ != b'E' {
            return None;
        }
        let (portal, rest) = read_cstr(body)?;
        if portal != bind.portal || rest.len() != 4 {
            return None;
        }
        let max_rows = i32::from_be_bytes(rest.try_into().ok()?);
        let execute = &buf[at..at + len];
        at += len;
        let (typ, _, len) = frame_at(&buf[at..])?;
        if typ != b'S' {
            return None;
        }
        at += len;
        if let Some(p) = &parse {
            if p.name != bind.statement {
                return None;
            }
        }
        Some(ExtendedBatch {
            parse,
            bind,
            bind_body,
            describe,
            execute,
            max_rows,
            len: at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(typ: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![typ];
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn bind(portal: &[u8], stmt: &[u8]) -> Vec<u8> {
        let mut b = portal.to_vec();
        b.push(0);
        b.extend_from_slice(stmt);
        b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0]);
        frame(b'B', &b)
    }

    #[test]
    fn reads_parse_bind_describe_execute_sync() {
        let mut buf = frame(b'P', b"s1\0select $1\0\0\x01\0\0\0\x17");
        buf.extend(bind(b"", b"s1"));
        buf.extend(frame(b'D', b"P\0"));
        buf.extend(frame(b'E', b"\0\0\0\0\0"));
        buf.extend(frame(b'S', b""));
        let full = buf.len();
        buf.extend(frame(b'S', b""));
        let b = ExtendedBatch::read(&buf).unwrap();
        assert_eq!(b.len, full);
        let p = b.parse.unwrap();
        assert_eq!(
            (p.name, p.sql, &*p.types),
            (&b"s1"[..], &b"select $1"[..], &[23][..])
        );
        assert!(b.describe.is_some());
        assert_eq!(b.max_rows, 0);
        assert_eq!(b.bind.statement, b"s1");
    }

    #[test]
    fn refuses_other_shapes() {
        // Parse of another statement than the Bind's.
        let mut buf = frame(b'P', b"a\0select 1\0\0\0");
        buf.extend(bind(b"", b"b"));
        buf.extend(frame(b'E', b"\0\0\0\0\0"));
        buf.extend(frame(b'S', b""));
        assert!(ExtendedBatch::read(&buf).is_none());
        // No Sync yet (the rest of the batch is still on its way).
        let mut buf = bind(b"", b"b");
        buf.extend(frame(b'E', b"\0\0\0\0\0"));
        assert!(ExtendedBatch::read(&buf).is_none());
        // Describe of another portal, or of another statement.
        for describe in [&b"Pq\0"[..], b"Sc\0"] {
            let mut buf = bind(b"p", b"b");
            buf.extend(frame(b'D', describe));
            buf.extend(frame(b'E', b"p\0\0\0\0\0"));
            buf.extend(frame(b'S', b""));
            assert!(ExtendedBatch::read(&buf).is_none());
        }
        // Describe of the bound statement.
        let mut buf = bind(b"p", b"b");
        buf.extend(frame(b'D', b"Sb\0"));
        buf.extend(frame(b'E', b"p\0\0\0\0\0"));
        buf.extend(frame(b'S', b""));
        assert!(
            ExtendedBatch::read(&buf)
                .unwrap()
                .describe
                .unwrap()
                .statement
        );
        // Parse with trailing garbage after its types.
        let mut buf = frame(b'P', b"\0select 1\0\0\0\x09");
        buf.extend(bind(b"", b""));
        buf.extend(frame(b'E', b"\0\0\0\0\0"));
        buf.extend(frame(b'S', b""));
        assert!(ExtendedBatch::read(&buf).is_none());
    }
}
