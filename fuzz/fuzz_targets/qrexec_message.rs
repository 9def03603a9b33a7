//! The qrexec message decoder over arbitrary bytes: framing, header validation and every
//! payload decoder, message after message until the first error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use qrexec::proto::read_message;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    while let Ok(message) = read_message(&mut input) {
        // A decoded message must encode again: the decoder accepts nothing the encoder cannot
        // represent.
        message.encode().expect("re-encode a decoded message");
    }
});
