//! Arbitrary text as an SDP offer: parse it, and when it parses, negotiate it and render the answer (which
//! must parse back).
#![no_main]

use libfuzzer_sys::fuzz_target;

use airlock_siprec::negotiate::{audio_stream_count, negotiate};
use airlock_siprec::sdp::{AnswerOrigin, SessionDescription};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(offer) = SessionDescription::parse(text) else {
        return;
    };
    let ports: Vec<u16> = (0..audio_stream_count(&offer))
        .map(|index| 10_000 + 2 * index as u16)
        .collect();
    if let Ok(negotiation) = negotiate(&offer, &ports) {
        let answer = negotiation.answer_sdp(&mut AnswerOrigin::new(1), [192, 0, 2, 1].into());
        assert!(
            SessionDescription::parse(&answer).is_ok(),
            "our own answer must parse"
        );
    }
});
