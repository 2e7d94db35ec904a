//! Syslog over a stream: arbitrary bytes fed to the RFC 6587 framer in arbitrary chunks (the
//! first byte picks the chunk size), each frame parsed into an event. Must never panic or
//! hang, never hold more than `max` plus one chunk, and every frame is at most `max` bytes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rulehook::transport::syslog::{frame::Framer, parse};

const MAX: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    let mut framer = Framer::new(MAX);
    let mut buf = BytesMut::new();
    for c in rest.chunks(chunk) {
        buf.extend_from_slice(c);
        while let Some(f) = framer.next(&mut buf) {
            assert!(f.bytes.len() <= MAX);
            let e = parse::event(&f.bytes, f.truncated);
            assert!(e["message"].is_string());
        }
        assert!(buf.len() <= MAX + 1 + 11 + chunk, "buffered {}", buf.len());
    }
    if let Some(f) = framer.rest(&mut buf) {
        let _ = parse::event(&f.bytes, f.truncated);
    }
    // A whole datagram, as UDP hands it over.
    let _ = parse::event(rest, false);
});
