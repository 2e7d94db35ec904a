//! RELP frames: arbitrary bytes in arbitrary chunks (the first byte picks the size). Must never
//! panic or hang; a frame's DATA is at most `max`; after an error the stream is abandoned.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rulehook::transport::syslog::relp::Framer;

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
        loop {
            match framer.next(&mut buf) {
                Ok(Some(f)) => assert!(f.data.len() <= MAX),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
