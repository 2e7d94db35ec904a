//! RELP, rsyslog's reliable forwarding (`omrelp`): over TCP, frames `TXNR SP COMMAND SP DATALEN
//! [SP DATA] LF`; the client `open`s (we answer with our offers), sends `syslog` frames, and
//! `close`s. Each `syslog` frame is answered `TXNR rsp 6 200 OK` only once its event is stored
//! (or, with `keep: matched`, known to match nothing): what rsyslog has not seen answered it
//! sends again after a reconnect, so a crash loses nothing (a message may come twice).
//!
//! A session keeps librelp's order ([`Session`]): it starts with `open`, and the client's
//! transaction numbers start at 1 and go up by one (0 is the server's, for hints). A command
//! other than `open`, `syslog` and `close` is answered `500 unknown command` and ends the
//! session, as librelp's server tears a session down after such an error.
//!
//! No maintained crate speaks the receiving side, and the protocol is this small.

use bytes::{Buf, BytesMut};

/// One RELP frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub txnr: u64,
    pub command: String,
    pub data: BytesMut,
    /// DATA was longer than the maximum: cut to it (the rest was skipped).
    pub truncated: bool,
}

/// Why a stream is not RELP (the connection is closed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RelpError {
    #[error("malformed RELP header")]
    Header,
    #[error("RELP frame not ended by LF")]
    Trailer,
}

/// The framing state of one connection.
#[derive(Debug)]
pub struct Framer {
    max: usize,
    /// A frame whose DATA is being cut: (frame so far, bytes of DATA left to skip).
    cutting: Option<(Frame, usize)>,
}

/// TXNR has at most 9 digits, a command at most 32 letters, DATALEN at most 9 digits.
const MAX_HEADER: usize = 9 + 1 + 32 + 1 + 9 + 1;

impl Framer {
    pub fn new(max: usize) -> Framer {
        Framer {
            max: max.max(1),
            cutting: None,
        }
    }

    /// The next whole frame in `buf`, consuming it; `Ok(None)` until more bytes arrive.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, RelpError> {
        if let Some((_, left)) = &mut self.cutting {
            let n = (*left).min(buf.len());
            buf.advance(n);
            *left -= n;
            if *left > 0 {
                return Ok(None);
            }
            return match buf.first() {
                None => Ok(None),
                Some(b'\n') => {
                    buf.advance(1);
                    Ok(self.cutting.take().map(|(f, _)| f))
                }
                Some(_) => Err(RelpError::Trailer),
            };
        }
        // Tolerate stray line ends between frames.
        let lead = buf
            .iter()
            .take_while(|b| matches!(b, b'\n' | b'\r'))
            .count();
        buf.advance(lead);
        let Some((txnr, command, len, header)) = header(buf)? else {
            return Ok(None);
        };
        if len <= self.max {
            // DATA, then LF.
            if buf.len() < header + len + 1 {
                return Ok(None);
            }
            if buf[header + len] != b'\n' {
                return Err(RelpError::Trailer);
            }
            buf.advance(header);
            let data = buf.split_to(len);
            buf.advance(1);
            return Ok(Some(Frame {
                txnr,
                command,
                data,
                truncated: false,
            }));
        }
        if buf.len() < header + self.max {
            return Ok(None);
        }
        buf.advance(header);
        let data = buf.split_to(self.max);
        self.cutting = Some((
            Frame {
                txnr,
                command,
                data,
                truncated: true,
            },
            len - self.max,
        ));
        self.next(buf)
    }
}

/// `TXNR SP COMMAND SP DATALEN [SP]`: the parts and the header's length (DATA starts there).
fn header(buf: &[u8]) -> Result<Option<(u64, String, usize, usize)>, RelpError> {
    let window = &buf[..buf.len().min(MAX_HEADER)];
    let mut parts = Vec::with_capacity(3);
    let mut start = 0;
    for (i, b) in window.iter().enumerate() {
        if parts.len() == 3 {
            break;
        }
        let ends = *b == b' ' || (parts.len() == 2 && *b == b'\n');
        if ends {
            parts.push((start, i, *b));
            start = i + 1;
        }
    }
    if parts.len() < 3 {
        return if buf.len() >= MAX_HEADER {
            Err(RelpError::Header)
        } else {
            Ok(None)
        };
    }
    let field = |(s, e, _): (usize, usize, u8)| std::str::from_utf8(&buf[s..e]).ok();
    let number = |t: Option<&str>| {
        t.filter(|t| !t.is_empty() && t.len() <= 9 && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<u64>().ok())
    };
    let txnr = number(field(parts[0])).ok_or(RelpError::Header)?;
    let command = field(parts[1])
        .filter(|c| !c.is_empty() && c.len() <= 32 && c.bytes().all(|b| b.is_ascii_alphabetic()))
        .ok_or(RelpError::Header)?;
    let len = number(field(parts[2])).ok_or(RelpError::Header)? as usize;
    let (_, end, sep) = parts[2];
    // With no DATA the LF follows DATALEN directly: it is the trailer, not part of the header.
    let header_len = if sep == b'\n' {
        if len != 0 {
            return Err(RelpError::Header);
        }
        end
    } else {
        end + 1
    };
    Ok(Some((txnr, command.to_string(), len, header_len)))
}

/// The largest transaction number; the one after it is 1 again.
const MAX_TXNR: u64 = 999_999_999;

/// Where one connection's session is: whether it was opened, and the transaction number the
/// client must send next.
#[derive(Debug)]
pub struct Session {
    opened: bool,
    next_txnr: u64,
}

/// What becomes of a frame the session does not take as it is.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its transaction number is not the next one (0 included): the session is broken and
    /// the connection is closed without an answer, as librelp's server tears it down.
    OutOfSequence { expected: u64, got: u64 },
    /// Answered with this (as librelp answers it) and not acted on; the session goes on.
    Answer(&'static str),
}

impl Default for Session {
    fn default() -> Session {
        Session {
            opened: false,
            next_txnr: 1,
        }
    }
}

impl Session {
    /// Takes `frame` in the session's order: `Ok` when it is to be acted on.
    pub fn admit(&mut self, frame: &Frame) -> Result<(), Refused> {
        if frame.txnr != self.next_txnr {
            return Err(Refused::OutOfSequence {
                expected: self.next_txnr,
                got: frame.txnr,
            });
        }
        self.next_txnr = if self.next_txnr >= MAX_TXNR {
            1
        } else {
            self.next_txnr + 1
        };
        match frame.command.as_str() {
            "open" if self.opened => Err(Refused::Answer(
                "500 protocol error: connection already open",
            )),
            "open" => {
                self.opened = true;
                Ok(())
            }
            "syslog" if !self.opened => Err(Refused::Answer("500 command disabled")),
            _ => Ok(()),
        }
    }
}

/// A response frame: `TXNR rsp LEN DATA LF`.
pub fn rsp(txnr: u64, data: &str) -> Vec<u8> {
    if data.is_empty() {
        format!("{txnr} rsp 0\n").into_bytes()
    } else {
        format!("{txnr} rsp {} {data}\n", data.len()).into_bytes()
    }
}

/// The answer to `open`: success and what we offer.
pub fn open_answer(txnr: u64) -> Vec<u8> {
    let data = format!(
        "200 OK\nrelp_version=0\nrelp_software=rulehook,{},https://github.com/rulehook\ncommands=syslog",
        env!("CARGO_PKG_VERSION")
    );
    rsp(txnr, &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(txnr: u64, command: &str) -> Frame {
        Frame {
            txnr,
            command: command.into(),
            data: BytesMut::new(),
            truncated: false,
        }
    }

    #[test]
    fn a_session_starts_with_open_and_counts_from_one() {
        let mut s = Session::default();
        assert_eq!(
            s.admit(&frame(1, "syslog")),
            Err(Refused::Answer("500 command disabled"))
        );
        assert_eq!(s.admit(&frame(2, "open")), Ok(()));
        assert_eq!(s.admit(&frame(3, "syslog")), Ok(()));
        assert_eq!(
            s.admit(&frame(4, "open")),
            Err(Refused::Answer(
                "500 protocol error: connection already open"
            ))
        );
        assert_eq!(
            s.admit(&frame(0, "syslog")),
            Err(Refused::OutOfSequence {
                expected: 5,
                got: 0
            })
        );
        let mut s = Session::default();
        assert_eq!(
            s.admit(&frame(0, "open")),
            Err(Refused::OutOfSequence {
                expected: 1,
                got: 0
            })
        );
        let mut s = Session {
            opened: true,
            next_txnr: MAX_TXNR,
        };
        assert_eq!(s.admit(&frame(MAX_TXNR, "syslog")), Ok(()));
        assert_eq!(s.admit(&frame(1, "syslog")), Ok(()), "after the largest: 1");
    }

    fn frames(max: usize, chunks: &[&[u8]]) -> Result<Vec<(u64, String, String, bool)>, RelpError> {
        let mut f = Framer::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(fr) = f.next(&mut buf)? {
                out.push((
                    fr.txnr,
                    fr.command,
                    String::from_utf8_lossy(&fr.data).to_string(),
                    fr.truncated,
                ));
            }
        }
        Ok(out)
    }

    #[test]
    fn a_session_as_omrelp_sends_it() {
        let got = frames(
            100,
            &[
                b"1 open 86 relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog\n",
                b"2 syslog 15 <13>hello the",
                b"re\n3 syslog 3 abc\n4 close 0\n",
            ],
        )
        .unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].1, "open");
        assert!(got[0].2.ends_with("commands=syslog"));
        assert_eq!(
            got[1],
            (2, "syslog".into(), "<13>hello there".into(), false)
        );
        assert_eq!(got[2], (3, "syslog".into(), "abc".into(), false));
        assert_eq!(got[3], (4, "close".into(), "".into(), false));
    }

    #[test]
    fn long_data_is_cut_and_the_stream_goes_on() {
        let got = frames(4, &[b"7 syslog 10 0123456", b"789\n8 syslog 2 ok\n"]).unwrap();
        assert_eq!(got[0], (7, "syslog".into(), "0123".into(), true));
        assert_eq!(got[1], (8, "syslog".into(), "ok".into(), false));
    }

    #[test]
    fn garbage_is_an_error_not_a_wait() {
        assert_eq!(
            frames(100, &[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]).unwrap_err(),
            RelpError::Header
        );
        assert_eq!(
            frames(100, &[b"1 syslog 3 abcX"]).unwrap_err(),
            RelpError::Trailer
        );
        assert_eq!(frames(100, &[&[b'1'; 200]]).unwrap_err(), RelpError::Header);
    }

    #[test]
    fn answers() {
        assert_eq!(rsp(5, "200 OK"), b"5 rsp 6 200 OK\n");
        assert_eq!(rsp(9, ""), b"9 rsp 0\n");
        assert!(
            String::from_utf8(open_answer(1))
                .unwrap()
                .starts_with("1 rsp ")
        );
    }
}
