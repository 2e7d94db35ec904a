//! Syslog over a stream (RFC 6587): each frame is either octet-counted (`LEN SP MSG`) or ends
//! at LF, decided per frame by its first byte (a digit: counted), as rsyslog's imtcp does.
//! A frame longer than `max` is cut to `max` bytes and flagged; the rest of it is skipped
//! as it arrives, so nothing is buffered beyond `max` plus one read.

use bytes::{Buf, BytesMut};

/// One message off the stream.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub bytes: BytesMut,
    /// Cut at `max`.
    pub truncated: bool,
}

/// The framing state of one connection.
#[derive(Debug)]
pub struct Framer {
    max: usize,
    /// Bytes of an over-long counted frame still to skip.
    skip: usize,
    /// Skipping an over-long LF frame up to its LF.
    skip_line: bool,
}

/// The longest count prefix read: a longer run of digits is not a count.
const MAX_COUNT_DIGITS: usize = 10;

impl Framer {
    pub fn new(max: usize) -> Framer {
        Framer {
            max: max.max(1),
            skip: 0,
            skip_line: false,
        }
    }

    /// The next whole frame in `buf`, consuming it; `None` until more bytes arrive.
    pub fn next(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(buf.len());
                buf.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    return None;
                }
            }
            if self.skip_line {
                match memchr(b'\n', buf) {
                    Some(i) => {
                        buf.advance(i + 1);
                        self.skip_line = false;
                    }
                    None => {
                        buf.clear();
                        return None;
                    }
                }
            }
            // Stray separators between frames.
            let lead = buf
                .iter()
                .take_while(|b| matches!(b, b'\n' | b'\r' | b'\0'))
                .count();
            buf.advance(lead);
            let first = *buf.first()?;
            if first.is_ascii_digit() {
                match self.counted(buf) {
                    Counted::Frame(f) => return Some(f),
                    Counted::NeedMore => return None,
                    Counted::Empty => continue,
                    // Digits not followed by a space: an LF frame that starts with a digit.
                    Counted::NoCount => {}
                }
            }
            return self.line(buf);
        }
    }

    /// `LEN SP MSG`.
    fn counted(&mut self, buf: &mut BytesMut) -> Counted {
        let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > MAX_COUNT_DIGITS {
            return Counted::NoCount;
        }
        match buf.get(digits) {
            None => return Counted::NeedMore,
            Some(b' ') => {}
            Some(_) => return Counted::NoCount,
        }
        let Some(len) = std::str::from_utf8(&buf[..digits])
            .ok()
            .and_then(|d| d.parse::<usize>().ok())
        else {
            return Counted::NoCount;
        };
        let start = digits + 1;
        if len == 0 {
            buf.advance(start);
            return Counted::Empty;
        }
        let take = len.min(self.max);
        if buf.len() < start + take {
            return Counted::NeedMore;
        }
        buf.advance(start);
        let bytes = buf.split_to(take);
        self.skip = len - take;
        Counted::Frame(Frame {
            bytes,
            truncated: len > take,
        })
    }

    fn line(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        match memchr(b'\n', &buf[..buf.len().min(self.max + 1)]) {
            Some(i) => {
                let mut bytes = buf.split_to(i + 1);
                bytes.truncate(i);
                Some(Frame {
                    bytes,
                    truncated: false,
                })
            }
            None if buf.len() > self.max => {
                let bytes = buf.split_to(self.max);
                self.skip_line = true;
                Some(Frame {
                    bytes,
                    truncated: true,
                })
            }
            None => None,
        }
    }

    /// What is left when the peer closes: a last frame without its LF, or a counted frame cut
    /// short (flagged `truncated`).
    pub fn rest(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        if self.skip > 0 || self.skip_line || buf.iter().all(|b| b.is_ascii_whitespace() || *b == 0)
        {
            buf.clear();
            return None;
        }
        // A counted frame the close cut short (a whole one was taken by `next`): the bytes
        // that came are its message, flagged cut, not a line that starts with the count.
        let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
        if (1..=MAX_COUNT_DIGITS).contains(&digits) && buf.get(digits) == Some(&b' ') {
            buf.advance(digits + 1);
            let mut bytes = buf.split();
            bytes.truncate(self.max);
            return Some(Frame {
                bytes,
                truncated: true,
            });
        }
        Some(Frame {
            bytes: buf.split(),
            truncated: false,
        })
    }
}

enum Counted {
    Frame(Frame),
    NeedMore,
    NoCount,
    /// `0 `: nothing to hand on.
    Empty,
}

/// The first `needle` in `hay` (the `memchr` crate: a word or vector at a time, not a byte).
fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(max: usize, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut f = Framer::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(fr) = f.next(&mut buf) {
                out.push((String::from_utf8_lossy(&fr.bytes).to_string(), fr.truncated));
            }
        }
        if let Some(fr) = f.rest(&mut buf) {
            out.push((String::from_utf8_lossy(&fr.bytes).to_string(), fr.truncated));
        }
        out
    }

    #[test]
    fn counted_and_lf_frames_mixed_per_frame() {
        let got = all(
            100,
            &[
                b"10 <13>hello\n",
                b"x<14>line one\n<15>li",
                b"ne two\n0 5 ab",
                b"cde",
            ],
        );
        assert_eq!(
            got,
            vec![
                ("<13>hello\n".to_string(), false),
                ("x<14>line one".to_string(), false),
                ("<15>line two".to_string(), false),
                ("abcde".to_string(), false),
            ]
        );
    }

    #[test]
    fn over_long_frames_are_cut_and_flagged_then_skipped() {
        let got = all(4, &[b"10 0123456789<1>a\n", b"abcdefgh", b"ijk\n<2>b\n"]);
        assert_eq!(
            got,
            vec![
                ("0123".to_string(), true),
                ("<1>a".to_string(), false),
                ("abcd".to_string(), true),
                ("<2>b".to_string(), false),
            ]
        );
    }

    #[test]
    fn a_digit_line_is_not_a_count() {
        let got = all(
            100,
            &[
                b"49: *Mar  1 00:09:07: %SYS-5-X: y\n",
                b"12345678901234 x\n",
            ],
        );
        assert_eq!(got[0].0, "49: *Mar  1 00:09:07: %SYS-5-X: y");
        assert_eq!(got[1].0, "12345678901234 x");
    }

    #[test]
    fn a_counted_frame_cut_short_by_the_close_is_kept_flagged() {
        // The count promised more than came: the bytes that came are the message, cut.
        assert_eq!(
            all(100, &[b"<1>a\n", b"30 <13>short then close"]),
            vec![
                ("<1>a".to_string(), false),
                ("<13>short then close".to_string(), true),
            ]
        );
        // Also when the count is past `max`.
        assert_eq!(
            all(8, &[b"999 <13>abc"]),
            vec![("<13>abc".to_string(), true)]
        );
        // A last line that starts with digits but no count is a line.
        assert_eq!(all(100, &[b"49: ab"]), vec![("49: ab".to_string(), false)]);
    }

    #[test]
    fn the_last_line_without_lf_is_kept() {
        assert_eq!(all(100, &[b"<1>a\n<2>b"]).len(), 2);
    }
}
