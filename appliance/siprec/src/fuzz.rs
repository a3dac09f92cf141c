//! Entry point for the `srs_dialog` fuzz target: arbitrary bytes become the bodies and a few header values of
//! a SIPREC dialog (INVITE, ACK, re-INVITE or UPDATE, BYE) fed to one [`Srs`] in virtual time, so the fuzzer
//! reaches call control with well-formed SIP around hostile bodies. Lives here so the fuzz crate stays thin.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use airlock_sip::{Remote, Transport};

use crate::srs::{Srs, SrsConfig, SrsOutput};

/// Splits `data` at 0xFF bytes into (content type, INVITE body, mid-dialog method selector + body) and drives
/// a whole dialog with them, then runs every timer to completion. Returns how many calls were started (for
/// tests). Must never panic.
pub fn drive_dialog(start: Instant, data: &[u8]) -> usize {
    let mut pieces = data.split(|&byte| byte == 0xFF);
    let content_type = String::from_utf8_lossy(pieces.next().unwrap_or_default()).replace(['\r', '\n'], "");
    let invite_body = pieces.next().unwrap_or_default();
    let update_body = pieces.next().unwrap_or_default();
    let mid_dialog_method = if update_body.first().is_some_and(|byte| byte % 2 == 0) {
        "UPDATE"
    } else {
        "INVITE"
    };

    let remote = Remote {
        transport: Transport::Udp,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 5070)),
        connection: None,
    };
    let mut srs = Srs::new(SrsConfig::default());
    let mut now = start;
    let mut to_tag = String::new();
    let mut calls_started = 0;
    for (cseq, method, body) in [
        (1, "INVITE", invite_body),
        (1, "ACK", &[][..]),
        (2, mid_dialog_method, update_body),
        (3, "BYE", &[][..]),
    ] {
        let mut message = format!(
            "{method} sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{cseq}{method}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:src@127.0.0.1>;tag=src\r\nTo: <sip:srs@127.0.0.1>{to_tag}\r\n\
             Call-ID: fuzz-call\r\nCSeq: {cseq} {method}\r\nContact: <sip:src@127.0.0.1:5070>;+sip.src\r\n\
             Require: siprec\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        message.extend_from_slice(body);
        srs.handle_sip(now, remote, &message);
        while let Some(output) = srs.poll_output() {
            match output {
                SrsOutput::StartCall { .. } => calls_started += 1,
                SrsOutput::Transmit { bytes, .. } if to_tag.is_empty() => {
                    if let Some(tag) = to_tag_of(&bytes) {
                        to_tag = format!(";tag={tag}");
                    }
                }
                _ => {}
            }
        }
        now += Duration::from_millis(100);
    }
    while let Some(deadline) = srs.poll_timeout() {
        if deadline > start + Duration::from_secs(600) {
            break;
        }
        now = now.max(deadline);
        srs.handle_timeout(now);
        while srs.poll_output().is_some() {}
    }
    calls_started
}

/// The To-tag of a 2xx response we sent, so the rest of the dialog can use it.
fn to_tag_of(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    if !text.starts_with("SIP/2.0 2") {
        return None;
    }
    let to = text
        .lines()
        .find(|line| line.to_ascii_lowercase().starts_with("to:"))?;
    let tag = to.split(";tag=").nth(1)?;
    Some(tag.split([';', '>', ' ']).next()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_dialog_and_garbage_both_run_through() {
        let sdp = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                   m=audio 4000 RTP/AVP 0\r\na=label:1\r\na=sendonly\r\n";
        let mut input = b"application/sdp".to_vec();
        input.push(0xFF);
        input.extend_from_slice(sdp.as_bytes());
        input.push(0xFF);
        input.extend_from_slice(sdp.replace("sendonly", "inactive").as_bytes());
        assert_eq!(
            drive_dialog(Instant::now(), &input),
            1,
            "the valid dialog records a call"
        );
        assert_eq!(
            drive_dialog(Instant::now(), b"multipart/mixed;boundary=\xff--\xff\x00"),
            0
        );
        assert_eq!(drive_dialog(Instant::now(), &[]), 0);
    }
}
