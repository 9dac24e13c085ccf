//! Finding frame boundaries in a byte stream without copying it.
//!
//! Every message after start-up is `type (1 byte) | length (4 bytes, includes itself) | body`.
//! The relay reads whatever the socket has into one buffer, asks [`FrameScanner::scan`] how many
//! leading bytes are ready to forward, writes exactly those in one call, and keeps the rest.
//! Frames whose body the proxy must see (chosen by the caller's `wants_body`) are held until they
//! are complete; all others are forwarded as their bytes arrive, so a 1 GB DataRow or a long COPY
//! stream never has to fit in memory.

use super::ProtocolError;

/// Size of a frame header: type byte plus length.
pub const HEADER_LEN: usize = 5;

/// Scans a relay buffer for frame boundaries, carrying state across reads.
#[derive(Debug)]
pub struct FrameScanner {
    /// Body bytes of a passed-through frame that have not arrived yet.
    remaining: usize,
    /// Largest accepted declared length (type byte excluded); `usize::MAX` for none.
    max_len: usize,
}

/// What [`FrameScanner::scan`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct ScanResult {
    /// Leading bytes of the buffer that may be forwarded now.
    pub ready: usize,
    /// Size of the held frame at `ready` that is still incomplete (so the caller can reserve
    /// capacity for it), or 0.
    pub pending_frame: usize,
}

impl FrameScanner {
    pub fn new(max_len: usize) -> Self {
        FrameScanner {
            remaining: 0,
            max_len,
        }
    }

    /// True when everything forwarded so far ends at a frame boundary (no passed-through
    /// frame is partly sent).
    /// Bytes of the current frame not yet scanned (0 at a boundary).
    pub fn remaining_in_frame(&self) -> usize {
        self.remaining
    }

    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Walk `buf` from its start. For each complete frame whose type satisfies `wants_body`,
    /// call `inspect(type, body)` (which may rewrite the body in place, keeping its length)
    /// before the frame counts as ready. Returns how many bytes are ready to forward.
    ///
    /// `inspect` returning `false` stops the scan after that frame (for example after a
    /// Terminate), so the caller can act before reading further.
    pub fn scan(
        &mut self,
        buf: &mut [u8],
        wants_body: impl Fn(u8) -> bool,
        mut inspect: impl FnMut(u8, &mut [u8]) -> bool,
    ) -> Result<ScanResult, ProtocolError> {
        let mut pos = 0usize;
        loop {
            if self.remaining > 0 {
                let take = self.remaining.min(buf.len() - pos);
                pos += take;
                self.remaining -= take;
                if self.remaining > 0 {
                    return Ok(ScanResult {
                        ready: pos,
                        pending_frame: 0,
                    });
                }
            }
            let rest = &buf[pos..];
            if rest.len() < HEADER_LEN {
                return Ok(ScanResult {
                    ready: pos,
                    pending_frame: 0,
                });
            }
            let typ = rest[0];
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
            if len < 4 {
                return Err(ProtocolError::InvalidLength {
                    typ: typ as char,
                    len,
                });
            }
            let len = len as usize;
            if len > self.max_len {
                return Err(ProtocolError::MessageTooLarge {
                    typ: typ as char,
                    len,
                    max: self.max_len,
                });
            }
            let total = 1 + len;
            if wants_body(typ) {
                if rest.len() < total {
                    return Ok(ScanResult {
                        ready: pos,
                        pending_frame: total,
                    });
                }
                let go_on = inspect(typ, &mut buf[pos + HEADER_LEN..pos + total]);
                pos += total;
                if !go_on {
                    return Ok(ScanResult {
                        ready: pos,
                        pending_frame: 0,
                    });
                }
            } else {
                pos += HEADER_LEN;
                self.remaining = len - 4;
            }
        }
    }
}

/// Appends a message of type `typ` whose body `body` writes (the length is filled in after).
pub fn put_frame(out: &mut bytes::BytesMut, typ: u8, body: impl FnOnce(&mut bytes::BytesMut)) {
    use bytes::BufMut;
    out.put_u8(typ);
    let at = out.len();
    out.put_u32(0);
    body(out);
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Read a NUL-terminated string from the start of `body`; returns it and the rest.
pub fn read_cstr(body: &[u8]) -> Option<(&[u8], &[u8])> {
    // Names (a Bind's portal and statement, an Execute's portal) are short and end within
    // a few bytes, where a plain loop beats memchr's set-up; SQL (a Parse's, on every
    // execution with the unnamed statement) is long, where memchr's vector scan wins.
    const SHORT: usize = 16;
    let nul = match body.iter().take(SHORT).position(|&b| b == 0) {
        Some(i) => i,
        None if body.len() <= SHORT => return None,
        None => SHORT + memchr::memchr(0, &body[SHORT..])?,
    };
    Some((&body[..nul], &body[nul + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_cstr_finds_the_first_nul_at_every_length() {
        for len in 0..48 {
            let mut body = vec![b'x'; len];
            body.extend_from_slice(b"\0rest\0");
            let (s, rest) = read_cstr(&body).expect("terminated");
            assert_eq!((s.len(), rest), (len, &b"rest\0"[..]), "{len}");
            assert!(read_cstr(&body[..len]).is_none(), "unterminated {len}");
        }
    }

    fn frame(typ: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![typ];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn passes_through_and_holds_inspected_frames() {
        let mut stream = frame(b'D', b"row data");
        stream.extend(frame(b'Z', b"I"));
        // Feed byte by byte: the scanner must never report a partial Z as ready.
        let mut scanner = FrameScanner::new(usize::MAX);
        let mut buf = Vec::new();
        let mut forwarded = Vec::new();
        let mut seen = Vec::new();
        for b in stream.iter() {
            buf.push(*b);
            let r = scanner
                .scan(
                    &mut buf,
                    |t| t == b'Z',
                    |t, body| {
                        seen.push((t, body.to_vec()));
                        true
                    },
                )
                .unwrap();
            forwarded.extend(buf.drain(..r.ready));
        }
        assert_eq!(forwarded, stream);
        assert_eq!(seen, vec![(b'Z', b"I".to_vec())]);
    }

    #[test]
    fn rewrites_in_place_and_stops_when_asked() {
        let mut buf = frame(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]);
        buf.extend(frame(b'Z', b"I"));
        let mut s = FrameScanner::new(usize::MAX);
        let r = s
            .scan(
                &mut buf,
                |t| t == b'K',
                |_, body| {
                    body[4..].copy_from_slice(&[9, 9, 9, 9]);
                    false
                },
            )
            .unwrap();
        assert_eq!(r.ready, 13);
        assert_eq!(&buf[9..13], &[9, 9, 9, 9]);
    }

    #[test]
    fn rejects_bad_and_oversized_lengths() {
        let mut s = FrameScanner::new(100);
        let mut bad = vec![b'Q', 0, 0, 0, 3];
        assert!(matches!(
            s.scan(&mut bad, |_| true, |_, _| true),
            Err(ProtocolError::InvalidLength { .. })
        ));
        let mut big = vec![b'Q', 0, 0, 1, 0];
        assert!(matches!(
            s.scan(&mut big, |_| true, |_, _| true),
            Err(ProtocolError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn reports_pending_size_of_held_frame() {
        let mut s = FrameScanner::new(usize::MAX);
        let full = frame(b'Q', b"select 1\0");
        let mut part = full[..7].to_vec();
        let r = s.scan(&mut part, |t| t == b'Q', |_, _| true).unwrap();
        assert_eq!(
            r,
            ScanResult {
                ready: 0,
                pending_frame: full.len()
            }
        );
    }
}
