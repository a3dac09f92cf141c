//! Arbitrary text as an SDP offer: parse it, and when it parses, negotiate it (with SDES keys allowed for
//! inputs of even length, as over TLS) and render the answer (which must parse back, and must never answer
//! an SRTP stream with plain RTP).
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
    let sdes_allowed = data.len() % 2 == 0;
    let ports: Vec<u16> = (0..audio_stream_count(&offer, sdes_allowed))
        .map(|index| 10_000 + 2 * index as u16)
        .collect();
    if let Ok(negotiation) = negotiate(&offer, &ports, sdes_allowed) {
        let answer = negotiation.answer_sdp(&mut AnswerOrigin::new(1), [192, 0, 2, 1].into());
        let parsed = SessionDescription::parse(&answer);
        assert!(parsed.is_ok(), "our own answer must parse");
        for (offered, answered) in offer.media.iter().zip(parsed.iter().flat_map(|sdp| &sdp.media)) {
            assert_eq!(offered.protocol, answered.protocol, "the answer keeps the offered profile");
            if answered.port != 0 && answered.protocol.is_secure() {
                assert_eq!(answered.crypto.len(), 1, "an accepted SRTP stream carries our a=crypto");
            }
        }
    }
});
