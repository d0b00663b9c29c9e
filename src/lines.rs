//! A line reader with bounded memory: lines longer than the limit are skipped to their
//! end and reported with their size instead of being buffered.

use std::io::{self, BufRead};

/// One line from [`LineReader::next_line`].
#[derive(Debug)]
pub enum Line<'a> {
    /// A line within the limit, without its `\n` (a trailing `\r` is kept; the
    /// decoder trims it).
    Ok(&'a [u8]),
    /// A line over the limit: its first `limit` bytes and its full size.
    Oversize {
        /// The first bytes of the line.
        head: &'a [u8],
        /// Full size in bytes.
        size: usize,
    },
}

/// Reads `\n`-separated lines, never holding more than `limit + 1` bytes of one.
///
/// A line that lies whole in the inner reader's buffer is handed out from there, without
/// a copy; only a line that straddles the end of that buffer is assembled in our own.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    limit: usize,
    line: u64,
    /// Bytes of the inner buffer handed out by the last call, consumed by the next.
    pending: usize,
}

impl<R: BufRead> LineReader<R> {
    /// Wrap a reader; lines over `limit` bytes are reported as [`Line::Oversize`].
    pub fn new(inner: R, limit: usize) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(4096),
            limit,
            line: 0,
            pending: 0,
        }
    }

    /// The next line and its 1-based number, or `None` at the end.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        if self.pending > 0 {
            self.inner.consume(self.pending);
            self.pending = 0;
        }
        // Fast path: the whole line (within the limit) is already buffered.
        let whole = loop {
            match self.inner.fill_buf() {
                Ok(c) => break memchr::memchr(b'\n', c).filter(|&i| i <= self.limit),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if let Some(i) = whole {
            self.pending = i + 1;
            self.line += 1;
            // A non-empty buffer is returned again without reading.
            let chunk = self.inner.fill_buf()?;
            return Ok(Some((self.line, Line::Ok(&chunk[..i]))));
        }
        self.buf.clear();
        let mut size = 0usize;
        let mut seen = false;
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break;
            }
            seen = true;
            let (take, done) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            let room = (self.limit + 1).saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&chunk[..take.min(room)]);
            size += take;
            self.inner.consume(if done { take + 1 } else { take });
            if done {
                break;
            }
        }
        if !seen {
            return Ok(None);
        }
        self.line += 1;
        if size > self.limit {
            self.buf.truncate(self.limit);
            return Ok(Some((
                self.line,
                Line::Oversize {
                    head: &self.buf,
                    size,
                },
            )));
        }
        Ok(Some((self.line, Line::Ok(&self.buf))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_bounds_long_ones() {
        let data = b"ab\n\nxxxxxxxxxx\ncd";
        let mut r = LineReader::new(io::BufReader::with_capacity(3, &data[..]), 5);
        let mut got = Vec::new();
        while let Some((n, l)) = r.next_line().unwrap() {
            got.push(match l {
                Line::Ok(b) => format!("{n}:{}", String::from_utf8_lossy(b)),
                Line::Oversize { head, size } => format!("{n}:big {} {size}", head.len()),
            });
        }
        assert_eq!(got, ["1:ab", "2:", "3:big 5 10", "4:cd"]);
    }

    fn read_all(data: &[u8], capacity: usize, limit: usize) -> Vec<(u64, Vec<u8>, Option<usize>)> {
        let mut r = LineReader::new(io::BufReader::with_capacity(capacity, data), limit);
        let mut got = Vec::new();
        while let Some((n, l)) = r.next_line().unwrap() {
            got.push(match l {
                Line::Ok(b) => (n, b.to_vec(), None),
                Line::Oversize { head, size } => (n, head.to_vec(), Some(size)),
            });
        }
        got
    }

    proptest::proptest! {
        /// Lines handed out from the inner buffer (the fast path) and lines assembled
        /// across refills agree with a plain split, whatever the buffer size.
        #[test]
        fn same_lines_whatever_the_buffer_size(
            data in proptest::collection::vec(proptest::sample::select(vec![b'a', b'b', b'\n']), 0..64),
            capacity in 1usize..20,
            limit in 0usize..8,
        ) {
            let mut want = Vec::new();
            if !data.is_empty() {
                let body = data.strip_suffix(b"\n").unwrap_or(&data);
                for (i, l) in body.split(|&b| b == b'\n').enumerate() {
                    let n = i as u64 + 1;
                    want.push(if l.len() > limit {
                        (n, l[..limit].to_vec(), Some(l.len()))
                    } else {
                        (n, l.to_vec(), None)
                    });
                }
            }
            proptest::prop_assert_eq!(read_all(&data, capacity, limit), want);
        }
    }
}
