//! Offer/answer decisions of the SRS for one SDP offer: which m-lines are recorded, with which codecs and
//! RFC 4733 telephone-event payload type, which are paused, which are refused (and why), and the answer SDP
//! that says so. Pure; the control layer (`srs`) turns a [`Negotiation`] into a recording plan.
//!
//! Flow for the control layer:
//! 1. [`acceptable_streams`] (or [`audio_stream_count`]) → how many local RTP ports to allocate, and for which
//!    m-line index and label (reuse a port for an index that already had one: RFC 3264 §8 keeps m-line
//!    positions stable within a dialog).
//! 2. [`negotiate`] with those ports, one per acceptable stream in order.
//! 3. [`Negotiation::answer_sdp`] for the 2xx body (plain `application/sdp`, R10), and
//!    [`Negotiation::accepted`] for the plan.
//!
//! Policy: only `m=audio` over `RTP/AVP(F)`, or `RTP/SAVP(F)` with an SDES key we can use (see `sdes`), with
//! at least one codec `airlock_media::Codec` decodes (PCMU, PCMA, G.722, L16) is accepted; every accepted
//! codec is listed in the answer in the offerer's order with the offerer's payload type numbers, so the SRC
//! may switch between them mid-call. An SRTP stream is answered with the same profile and our own
//! `a=crypto`, or refused (port 0) — never answered as plain RTP (the OrecX bug in siprec.md R18). SDES keys
//! are only taken when the caller says the offer arrived over TLS (or the operator allowed otherwise);
//! DTLS-SRTP (`UDP/TLS/RTP/SAVP`) is refused.

use std::net::IpAddr;

use airlock_media::Codec;
use airlock_telemetry::Pii;
use thiserror::Error;

use crate::sdes::{self, SdesKey};
use crate::sdp::{
    AnswerFormat, AnswerMedia, AnswerOrigin, Direction, MediaDescription, SessionDescription,
    TransportProtocol, render_answer,
};

const TELEPHONE_EVENT: &str = "telephone-event";

/// Why no stream of an offer can be recorded. [`NegotiateError::sip_status`] gives the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NegotiateError {
    /// The peer offered no audio stream with a codec we decode (or no audio at all) — 488.
    #[error("no audio stream in the offer has a codec the SRS can record")]
    NoAcceptableCodec,
    /// The only usable audio streams use an SRTP keying we do not implement (DTLS-SRTP) — 488.
    #[error("the offer's audio streams use DTLS-SRTP; the SRS takes SDES keys only")]
    SrtpNotSupported,
    /// SRTP streams whose `a=crypto` lines offer no suite or key form we support — 488.
    #[error("no a=crypto line of the offer has a supported suite and key")]
    NoAcceptableCrypto,
    /// SDES keys arrived over a plain transport and the insecure switch is off — 488.
    #[error("SDES keys are accepted only over SIP/TLS")]
    SdesRequiresTls,
    /// Our limit: streams were acceptable but no local port was supplied for any of them — 503.
    #[error("no local media port for any acceptable stream")]
    NoLocalPorts,
}

impl NegotiateError {
    /// 488 for offers we cannot use, 503 when we ran out of ports.
    pub fn sip_status(&self) -> u16 {
        match self {
            NegotiateError::NoAcceptableCodec
            | NegotiateError::SrtpNotSupported
            | NegotiateError::NoAcceptableCrypto
            | NegotiateError::SdesRequiresTls => 488,
            NegotiateError::NoLocalPorts => 503,
        }
    }

    /// A short reason phrase naming the problem.
    pub fn reason_phrase(&self) -> &'static str {
        match self {
            NegotiateError::NoAcceptableCodec => "No Acceptable Audio Codec",
            NegotiateError::SrtpNotSupported => "DTLS-SRTP Not Supported",
            NegotiateError::NoAcceptableCrypto => "No Acceptable SRTP Crypto Suite",
            NegotiateError::SdesRequiresTls => "SDES-SRTP Requires SIP over TLS",
            NegotiateError::NoLocalPorts => "No Media Ports Available",
        }
    }
}

/// Why one m-line is answered with port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Not `m=audio` (video, text, application, message, image …).
    NotAudio,
    /// The offer itself has port 0 (the SRC disabled the stream).
    DisabledByOfferer,
    /// An SRTP profile keyed other than by SDES (DTLS-SRTP).
    SrtpNotSupported,
    /// `RTP/SAVP(F)` whose `a=crypto` lines we cannot use (suite, MKI, session parameters, key length).
    NoAcceptableCrypto,
    /// `RTP/SAVP(F)` received over a plain transport: its keys were readable on the path.
    SdesRequiresTls,
    /// A transport other than RTP/AVP or RTP/AVPF.
    UnsupportedProtocol,
    /// No offered payload type maps to a codec we decode.
    NoAcceptableCodec,
    /// Acceptable, but `negotiate` was given fewer local ports than acceptable streams.
    NoLocalPort,
}

/// An m-line the SRS can record, as reported by [`acceptable_streams`] before ports are allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptableStream {
    /// Position of the m-line in the offer (0-based).
    pub index: usize,
    /// Its `a=label`, if any.
    pub label: Option<String>,
}

/// An accepted audio stream: what the runtime needs to receive and decode it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedStream {
    /// Position of the m-line in the offer (0-based).
    pub index: usize,
    /// The offer's `a=label` (None when the SRC sent none; the control layer then picks a fallback name).
    pub label: Option<String>,
    /// The local RTP port we answered with.
    pub local_port: u16,
    /// Accepted codecs with the offerer's payload types, in the offerer's preference order (never empty).
    pub codecs: Vec<(u8, Codec)>,
    /// The RFC 4733 telephone-event payload type, when offered (the one whose clock rate matches the first
    /// codec's RTP clock rate, else the first offered).
    pub telephone_event_pt: Option<u8>,
    /// True when the offerer does not send on it now: `a=inactive`/`a=recvonly` or a `0.0.0.0`/`::`
    /// connection address. The stream stays allocated; the recording shows a pause.
    pub paused: bool,
    /// For `RTP/SAVP(F)`: the offerer's SDES key, which the media it sends is protected with.
    pub srtp: Option<SdesKey>,
    answer: AnswerMedia,
}

/// A refused m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedStream {
    /// Position of the m-line in the offer (0-based).
    pub index: usize,
    /// The offered media type (`audio`, `video`, …).
    pub media_type: String,
    /// Why it was refused.
    pub reason: RejectReason,
    answer: AnswerMedia,
}

/// The decision for one m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamDecision {
    /// Recorded.
    Accepted(AcceptedStream),
    /// Answered with port 0.
    Rejected(RejectedStream),
}

/// The decisions for every m-line of an offer, in the offer's order; at least one is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiation {
    decisions: Vec<StreamDecision>,
}

impl Negotiation {
    /// One decision per offered m-line, in order.
    pub fn decisions(&self) -> &[StreamDecision] {
        &self.decisions
    }

    /// The accepted streams, in m-line order.
    pub fn accepted(&self) -> impl Iterator<Item = &AcceptedStream> {
        self.decisions.iter().filter_map(|decision| match decision {
            StreamDecision::Accepted(stream) => Some(stream),
            StreamDecision::Rejected(_) => None,
        })
    }

    /// The refused streams, in m-line order.
    pub fn rejected(&self) -> impl Iterator<Item = &RejectedStream> {
        self.decisions.iter().filter_map(|decision| match decision {
            StreamDecision::Rejected(stream) => Some(stream),
            StreamDecision::Accepted(_) => None,
        })
    }

    /// Reuses our answer keys from `previous` for SRTP streams (same m-line) whose offered key is
    /// unchanged, so a session refresh produces the same answer (and keeps the `o=` version, RFC 3264 §8).
    pub fn keep_answer_keys(&mut self, previous: &Negotiation) {
        for decision in &mut self.decisions {
            let StreamDecision::Accepted(stream) = decision else {
                continue;
            };
            let earlier = previous
                .accepted()
                .find(|old| old.index == stream.index && old.srtp == stream.srtp);
            if let (
                Some(AcceptedStream {
                    answer: AnswerMedia::Audio { crypto: kept, .. },
                    ..
                }),
                AnswerMedia::Audio { crypto, .. },
            ) = (earlier, &mut stream.answer)
                && stream.srtp.is_some()
            {
                crypto.clone_from(kept);
            }
        }
    }

    /// The answer SDP: same m-lines in the same order, accepted audio `a=recvonly` (or `a=inactive` when
    /// the offerer does not send) on our port at `media_address`, labels echoed, refused ones with port 0.
    /// Each call takes the next `o=` version from `origin`.
    pub fn answer_sdp(&self, origin: &mut AnswerOrigin, media_address: IpAddr) -> String {
        let media: Vec<AnswerMedia> = self
            .decisions
            .iter()
            .map(|decision| match decision {
                StreamDecision::Accepted(stream) => stream.answer.clone(),
                StreamDecision::Rejected(stream) => stream.answer.clone(),
            })
            .collect();
        render_answer(origin, media_address, &media)
    }
}

/// The m-lines of `offer` that [`negotiate`] will accept when given a port for each, in m-line order.
/// `sdes_allowed`: the offer arrived over TLS, or the operator accepts SDES keys over plain transports.
pub fn acceptable_streams(offer: &SessionDescription, sdes_allowed: bool) -> Vec<AcceptableStream> {
    offer
        .media
        .iter()
        .enumerate()
        .filter(|(_, media)| evaluate(offer, media, sdes_allowed).is_ok())
        .map(|(index, media)| AcceptableStream {
            index,
            label: media.label.clone(),
        })
        .collect()
}

/// How many local RTP ports to allocate before calling [`negotiate`].
pub fn audio_stream_count(offer: &SessionDescription, sdes_allowed: bool) -> usize {
    acceptable_streams(offer, sdes_allowed).len()
}

/// Decides every m-line of `offer`. `local_ports` gives one port per acceptable stream, in the order of
/// [`acceptable_streams`]; acceptable streams beyond the supplied ports are refused with
/// [`RejectReason::NoLocalPort`], extra ports are left unused. Fails when nothing can be accepted.
/// `sdes_allowed` as for [`acceptable_streams`].
pub fn negotiate(
    offer: &SessionDescription,
    local_ports: &[u16],
    sdes_allowed: bool,
) -> Result<Negotiation, NegotiateError> {
    let mut ports = local_ports.iter().copied();
    let mut decisions = Vec::with_capacity(offer.media.len());
    for (index, media) in offer.media.iter().enumerate() {
        let decision = match evaluate(offer, media, sdes_allowed) {
            Ok(usable) => match ports.next() {
                Some(local_port) => StreamDecision::Accepted(usable.accept(index, media, local_port)),
                None => reject(index, media, RejectReason::NoLocalPort),
            },
            Err(reason) => reject(index, media, reason),
        };
        decisions.push(decision);
    }
    let negotiation = Negotiation { decisions };
    if negotiation.accepted().next().is_some() {
        return Ok(negotiation);
    }
    let refused_for = |reason| negotiation.rejected().any(|stream| stream.reason == reason);
    Err(if refused_for(RejectReason::NoLocalPort) {
        NegotiateError::NoLocalPorts
    } else if refused_for(RejectReason::SdesRequiresTls) {
        NegotiateError::SdesRequiresTls
    } else if refused_for(RejectReason::NoAcceptableCrypto) {
        NegotiateError::NoAcceptableCrypto
    } else if refused_for(RejectReason::SrtpNotSupported) {
        NegotiateError::SrtpNotSupported
    } else {
        NegotiateError::NoAcceptableCodec
    })
}

fn reject(index: usize, media: &MediaDescription, reason: RejectReason) -> StreamDecision {
    let format = media
        .formats
        .first()
        .cloned()
        .unwrap_or_else(|| String::from("0"));
    StreamDecision::Rejected(RejectedStream {
        index,
        media_type: media.media_type.clone(),
        reason,
        answer: AnswerMedia::Rejected {
            media_type: media.media_type.clone(),
            protocol: media.protocol.clone(),
            format,
        },
    })
}

/// What makes an m-line acceptable, before a port is assigned.
struct UsableStream {
    codecs: Vec<(u8, Codec)>,
    formats: Vec<AnswerFormat>,
    telephone_event_pt: Option<u8>,
    paused: bool,
    answer_direction: Direction,
    srtp: Option<SdesKey>,
    /// Our `a=crypto` for an SRTP stream (made here so a stream without one is never accepted).
    answer_crypto: Option<Pii<String>>,
}

impl UsableStream {
    fn accept(self, index: usize, media: &MediaDescription, local_port: u16) -> AcceptedStream {
        AcceptedStream {
            index,
            label: media.label.clone(),
            local_port,
            codecs: self.codecs,
            telephone_event_pt: self.telephone_event_pt,
            paused: self.paused,
            answer: AnswerMedia::Audio {
                port: local_port,
                protocol: media.protocol.clone(),
                formats: self.formats,
                label: media.label.clone(),
                direction: self.answer_direction,
                crypto: self.answer_crypto,
            },
            srtp: self.srtp,
        }
    }
}

fn evaluate(
    offer: &SessionDescription,
    media: &MediaDescription,
    sdes_allowed: bool,
) -> Result<UsableStream, RejectReason> {
    if !media.is_audio() {
        return Err(RejectReason::NotAudio);
    }
    if media.port == 0 {
        return Err(RejectReason::DisabledByOfferer);
    }
    let srtp = match media.protocol {
        TransportProtocol::RtpAvp | TransportProtocol::RtpAvpf => None,
        TransportProtocol::RtpSavp | TransportProtocol::RtpSavpf if !sdes_allowed => {
            return Err(RejectReason::SdesRequiresTls);
        }
        TransportProtocol::RtpSavp | TransportProtocol::RtpSavpf => {
            let key = sdes::choose(&media.crypto).map_err(|_| RejectReason::NoAcceptableCrypto)?;
            let ours = sdes::answer_crypto(&key).ok_or(RejectReason::NoAcceptableCrypto)?;
            Some((key, ours))
        }
        _ if media.protocol.is_secure() => return Err(RejectReason::SrtpNotSupported),
        _ => return Err(RejectReason::UnsupportedProtocol),
    };
    let mut codecs: Vec<(u8, Codec)> = Vec::new();
    let mut formats = Vec::new();
    for payload_type in media.payload_types() {
        if codecs.iter().any(|(known, _)| *known == payload_type) {
            continue;
        }
        let mapped = match media.rtpmap(payload_type) {
            Some(map) => Codec::from_rtpmap(&map.encoding, map.clock_rate, map.channels.unwrap_or(1))
                .map(|codec| (codec, map.encoding_value())),
            None => Codec::from_static_payload_type(payload_type).map(|codec| (codec, static_rtpmap(codec))),
        };
        if let Some((codec, rtpmap)) = mapped {
            codecs.push((payload_type, codec));
            formats.push(answer_format(media, payload_type, rtpmap));
        }
    }
    let first_clock_rate = codecs
        .first()
        .ok_or(RejectReason::NoAcceptableCodec)?
        .1
        .rtp_clock_rate();
    let telephone_events: Vec<_> = media
        .payload_types()
        .filter_map(|payload_type| media.rtpmap(payload_type))
        .filter(|map| map.encoding.eq_ignore_ascii_case(TELEPHONE_EVENT))
        .collect();
    let telephone_event = telephone_events
        .iter()
        .find(|map| map.clock_rate == first_clock_rate)
        .or_else(|| telephone_events.first());
    if let Some(map) = telephone_event {
        formats.push(answer_format(media, map.payload_type, map.encoding_value()));
    }
    let direction = offer.direction_of(media);
    let on_hold_address = offer
        .connection_of(media)
        .is_some_and(|connection| connection.is_unspecified());
    Ok(UsableStream {
        codecs,
        formats,
        telephone_event_pt: telephone_event.map(|map| map.payload_type),
        paused: !direction.offerer_sends() || on_hold_address,
        answer_crypto: srtp.as_ref().map(|(_, ours)| ours.clone()),
        srtp: srtp.map(|(key, _)| key),
        answer_direction: if direction.offerer_sends() {
            Direction::RecvOnly
        } else {
            Direction::Inactive
        },
    })
}

fn answer_format(media: &MediaDescription, payload_type: u8, rtpmap: String) -> AnswerFormat {
    AnswerFormat {
        payload_type,
        rtpmap,
        fmtp: media.fmtp(payload_type).map(str::to_owned),
    }
}

/// The `a=rtpmap` value for a static payload type the offer did not map explicitly.
fn static_rtpmap(codec: Codec) -> String {
    match codec.channels() {
        1 => format!("{}/{}", codec.rtpmap_name(), codec.rtp_clock_rate()),
        channels => format!("{}/{}/{channels}", codec.rtpmap_name(), codec.rtp_clock_rate()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(media_sections: &str) -> SessionDescription {
        let text = format!(
            "v=0\r\no=- 7 7 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n{media_sections}"
        );
        SessionDescription::parse(&text).unwrap()
    }

    const ADDRESS: &str = "198.51.100.7";

    #[test]
    fn rtpengine_style_labels_one_before_zero() {
        let sdp = offer(
            "m=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\na=label:1\r\na=sendonly\r\na=rtcp:30001\r\n\
             m=audio 30002 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\na=label:0\r\na=sendonly\r\na=rtcp:30003\r\n",
        );
        let slots = acceptable_streams(&sdp, false);
        assert_eq!(
            slots.iter().map(|slot| slot.label.as_deref()).collect::<Vec<_>>(),
            [Some("1"), Some("0")]
        );
        let negotiation = negotiate(&sdp, &[16000, 16002], false).unwrap();
        let accepted: Vec<_> = negotiation.accepted().collect();
        assert_eq!(accepted[0].label.as_deref(), Some("1"));
        assert_eq!(accepted[0].local_port, 16000);
        assert_eq!(accepted[1].label.as_deref(), Some("0"));
        assert_eq!(accepted[0].codecs, [(0, Codec::Pcmu)]);
        assert_eq!(accepted[0].telephone_event_pt, Some(101));
        assert!(!accepted[0].paused);

        let answer = negotiation.answer_sdp(&mut AnswerOrigin::new(5), ADDRESS.parse().unwrap());
        let parsed = SessionDescription::parse(&answer).unwrap();
        assert_eq!(parsed.media.len(), 2);
        for (media, (port, label)) in parsed.media.iter().zip([(16000, "1"), (16002, "0")]) {
            assert_eq!(media.port, port);
            assert_eq!(media.label.as_deref(), Some(label));
            assert_eq!(parsed.direction_of(media), Direction::RecvOnly);
            assert_eq!(media.payload_types().collect::<Vec<_>>(), [0, 101]);
            assert_eq!(media.fmtp(101), Some("0-16"));
        }
        assert_eq!(parsed.connection.unwrap().address.expose(), ADDRESS);
    }

    #[test]
    fn three_streams_with_video_text_and_disabled_audio() {
        let sdp = offer(
            "m=audio 4000 RTP/AVP 8 0\r\na=label:caller\r\na=sendonly\r\n\
             m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=label:video\r\n\
             m=audio 4004 RTP/AVPF 9 96\r\na=rtpmap:96 opus/48000/2\r\na=label:callee\r\na=sendonly\r\n\
             m=text 4006 RTP/AVP 98\r\na=rtpmap:98 t140/1000\r\n\
             m=audio 0 RTP/AVP 0\r\na=label:gone\r\n\
             m=audio 4010 RTP/AVP 18 96\r\na=rtpmap:96 opus/48000/2\r\na=label:g729\r\n\
             m=audio 4012 RTP/AVP 0\r\na=label:mixed\r\na=sendonly\r\n",
        );
        assert_eq!(audio_stream_count(&sdp, false), 3);
        let negotiation = negotiate(&sdp, &[20000, 20002, 20004], false).unwrap();
        let accepted: Vec<_> = negotiation.accepted().collect();
        assert_eq!(accepted.len(), 3);
        assert_eq!(accepted[0].codecs, [(8, Codec::Pcma), (0, Codec::Pcmu)]);
        assert_eq!(accepted[1].codecs, [(9, Codec::G722)]);
        assert_eq!(accepted[1].index, 2);
        assert_eq!(accepted[2].index, 6);
        let reasons: Vec<_> = negotiation
            .rejected()
            .map(|stream| (stream.index, stream.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                (1, RejectReason::NotAudio),
                (3, RejectReason::NotAudio),
                (4, RejectReason::DisabledByOfferer),
                (5, RejectReason::NoAcceptableCodec)
            ]
        );
        let answer = SessionDescription::parse(
            &negotiation.answer_sdp(&mut AnswerOrigin::new(1), ADDRESS.parse().unwrap()),
        )
        .unwrap();
        let ports: Vec<_> = answer
            .media
            .iter()
            .map(|media| (media.media_type.as_str(), media.port))
            .collect();
        assert_eq!(
            ports,
            [
                ("audio", 20000),
                ("video", 0),
                ("audio", 20002),
                ("text", 0),
                ("audio", 0),
                ("audio", 0),
                ("audio", 20004)
            ]
        );
        assert_eq!(answer.media[2].protocol, TransportProtocol::RtpAvpf);
        assert_eq!(answer.media[2].payload_types().collect::<Vec<_>>(), [9]);
        assert_eq!(answer.media[2].rtpmap(9).unwrap().encoding_value(), "G722/8000");
        assert_eq!(answer.media[1].formats, ["96"]);
    }

    #[test]
    fn hold_by_inactive_or_unspecified_address() {
        let inactive = offer("m=audio 4000 RTP/AVP 0\r\na=label:1\r\na=inactive\r\n");
        let negotiation = negotiate(&inactive, &[6000], false).unwrap();
        assert!(negotiation.accepted().next().unwrap().paused);
        let answer = SessionDescription::parse(
            &negotiation.answer_sdp(&mut AnswerOrigin::new(1), ADDRESS.parse().unwrap()),
        )
        .unwrap();
        assert_eq!(answer.direction_of(&answer.media[0]), Direction::Inactive);

        let zero_address = offer("m=audio 4000 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\na=label:1\r\na=sendonly\r\n");
        let negotiation = negotiate(&zero_address, &[6000], false).unwrap();
        assert!(negotiation.accepted().next().unwrap().paused);
        let answer = SessionDescription::parse(
            &negotiation.answer_sdp(&mut AnswerOrigin::new(1), ADDRESS.parse().unwrap()),
        )
        .unwrap();
        assert_eq!(answer.direction_of(&answer.media[0]), Direction::RecvOnly);

        let session_inactive = SessionDescription::parse(
            "v=0\r\nc=IN IP4 192.0.2.1\r\na=inactive\r\nm=audio 4000 RTP/AVP 0\r\nm=audio 4002 RTP/AVP 0\r\na=sendonly\r\n",
        )
        .unwrap();
        let paused: Vec<_> = negotiate(&session_inactive, &[1, 2], false)
            .unwrap()
            .accepted()
            .map(|stream| stream.paused)
            .collect();
        assert_eq!(paused, [true, false]);
    }

    const SDES_80: &str =
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd\r\n";

    #[test]
    fn sdes_over_plain_transport_is_refused_per_stream_never_answered_as_rtp() {
        let mixed = offer(&format!(
            "m=audio 4000 RTP/SAVP 0\r\n{SDES_80}a=label:1\r\nm=audio 4002 RTP/AVP 0\r\na=label:2\r\n"
        ));
        assert_eq!(audio_stream_count(&mixed, false), 1);
        let negotiation = negotiate(&mixed, &[7000], false).unwrap();
        let answer = negotiation.answer_sdp(&mut AnswerOrigin::new(1), ADDRESS.parse().unwrap());
        assert!(answer.contains("m=audio 0 RTP/SAVP 0\r\n"), "{answer}");
        assert!(answer.contains("m=audio 7000 RTP/AVP 0\r\n"), "{answer}");
        assert!(!answer.contains("a=crypto"), "{answer}");

        let only_srtp = offer(&format!("m=audio 4000 RTP/SAVP 0\r\n{SDES_80}"));
        assert_eq!(
            negotiate(&only_srtp, &[1], false),
            Err(NegotiateError::SdesRequiresTls)
        );
        let dtls = offer("m=audio 4002 UDP/TLS/RTP/SAVPF 0\r\n");
        assert_eq!(
            negotiate(&dtls, &[1], true),
            Err(NegotiateError::SrtpNotSupported)
        );
    }

    #[test]
    fn sdes_stream_is_answered_savp_with_our_own_key_under_the_offered_tag() {
        let sdp = offer(&format!(
            "m=audio 4000 RTP/SAVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=crypto:7 AES_256_CM_HMAC_SHA1_80 inline:{}\r\n{}a=label:1\r\na=sendonly\r\n",
            "A".repeat(62),
            SDES_80.replace("crypto:1", "crypto:2")
        ));
        assert_eq!(audio_stream_count(&sdp, true), 1);
        let negotiation = negotiate(&sdp, &[7000], true).unwrap();
        let stream = negotiation.accepted().next().unwrap();
        let key = stream.srtp.as_ref().expect("an SDES key");
        assert_eq!(
            (key.tag, key.suite()),
            (2, airlock_rtp::SrtpSuite::AesCm128HmacSha1_80)
        );
        assert_eq!(key.key.key_and_salt(), &(0u8..30).collect::<Vec<u8>>()[..]);
        let answer = negotiation.answer_sdp(&mut AnswerOrigin::new(1), ADDRESS.parse().unwrap());
        assert!(answer.contains("m=audio 7000 RTP/SAVP 0 101\r\n"), "{answer}");
        let crypto: Vec<&str> = answer
            .lines()
            .filter(|line| line.starts_with("a=crypto:"))
            .collect();
        assert_eq!(crypto.len(), 1, "{answer}");
        assert!(
            crypto[0].starts_with("a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:"),
            "{answer}"
        );
        assert!(
            !crypto[0].contains("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"),
            "never echo the offerer's key"
        );
        assert!(!format!("{key:?}").contains("AAEC"));
    }

    #[test]
    fn savp_with_no_usable_crypto_line_is_488() {
        for crypto in [
            "",
            "a=crypto:1 F8_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd\r\n",
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd|2^20|1:4\r\n",
        ] {
            let sdp = offer(&format!("m=audio 4000 RTP/SAVP 0\r\n{crypto}"));
            let error = negotiate(&sdp, &[1], true).unwrap_err();
            assert_eq!(error, NegotiateError::NoAcceptableCrypto, "{crypto}");
            assert_eq!(
                (error.sip_status(), error.reason_phrase()),
                (488, "No Acceptable SRTP Crypto Suite")
            );
        }
    }

    #[test]
    fn static_payload_types_without_rtpmap_and_l16() {
        let sdp = offer("m=audio 4000 RTP/AVP 11 97 8\r\na=rtpmap:97 L16/16000\r\n");
        let negotiation = negotiate(&sdp, &[8000], false).unwrap();
        let stream = negotiation.accepted().next().unwrap();
        assert_eq!(
            stream.codecs,
            [
                (
                    11,
                    Codec::L16 {
                        rate: 44100,
                        channels: 1
                    }
                ),
                (
                    97,
                    Codec::L16 {
                        rate: 16000,
                        channels: 1
                    }
                ),
                (8, Codec::Pcma)
            ]
        );
        assert_eq!(stream.telephone_event_pt, None);
        let answer = negotiation.answer_sdp(&mut AnswerOrigin::new(1), ADDRESS.parse().unwrap());
        assert!(answer.contains("a=rtpmap:11 L16/44100\r\n") && answer.contains("a=rtpmap:8 PCMA/8000\r\n"));
    }

    #[test]
    fn telephone_event_matching_the_codec_clock_is_preferred() {
        let sdp = offer(
            "m=audio 4000 RTP/AVP 97 9 101 100\r\na=rtpmap:97 L16/16000\r\na=rtpmap:100 telephone-event/16000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n",
        );
        let negotiation = negotiate(&sdp, &[1], false).unwrap();
        assert_eq!(
            negotiation.accepted().next().unwrap().telephone_event_pt,
            Some(100)
        );
    }

    #[test]
    fn failures_name_the_reason() {
        let opus_only =
            offer("m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\nm=video 4002 RTP/AVP 97\r\n");
        assert_eq!(
            negotiate(&opus_only, &[1], false),
            Err(NegotiateError::NoAcceptableCodec)
        );
        assert_eq!(NegotiateError::NoAcceptableCodec.sip_status(), 488);
        let fine = offer("m=audio 4000 RTP/AVP 0\r\nm=audio 4002 RTP/AVP 0\r\n");
        assert_eq!(negotiate(&fine, &[], false), Err(NegotiateError::NoLocalPorts));
        assert_eq!(NegotiateError::NoLocalPorts.sip_status(), 503);
        let one_port = negotiate(&fine, &[9], false).unwrap();
        assert_eq!(
            one_port.rejected().next().unwrap().reason,
            RejectReason::NoLocalPort
        );
        assert_eq!(
            negotiate(&offer(""), &[1], false),
            Err(NegotiateError::NoAcceptableCodec)
        );
    }

    #[test]
    fn every_truncated_offer_negotiates_or_fails_cleanly_and_our_answer_parses() {
        let full = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
            m=audio 4000 RTP/AVP 0 8 9 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n\
            a=label:1\r\na=sendonly\r\nm=video 4002 RTP/AVP 96\r\nm=audio 4004 RTP/SAVP 0\r\n\
            m=audio 4006 RTP/AVP 97\r\na=rtpmap:97 L16/16000/2\r\nc=IN IP4 0.0.0.0\r\na=label:2\r\n";
        for end in 0..=full.len() {
            let Ok(offer) = SessionDescription::parse(&full[..end]) else {
                continue;
            };
            let ports: Vec<u16> = (0..audio_stream_count(&offer, false))
                .map(|index| 9000 + index as u16)
                .collect();
            if let Ok(negotiation) = negotiate(&offer, &ports, false) {
                assert_eq!(negotiation.decisions().len(), offer.media.len());
                let answer = negotiation.answer_sdp(&mut AnswerOrigin::new(3), ADDRESS.parse().unwrap());
                let parsed = SessionDescription::parse(&answer).unwrap();
                assert_eq!(parsed.media.len(), offer.media.len());
            }
        }
    }

    #[test]
    fn answer_versions_increase_within_a_dialog() {
        let sdp = offer("m=audio 4000 RTP/AVP 0\r\n");
        let mut origin = AnswerOrigin::new(99);
        let negotiation = negotiate(&sdp, &[1], false).unwrap();
        let versions: Vec<u64> = (0..3)
            .map(|_| {
                let answer =
                    SessionDescription::parse(&negotiation.answer_sdp(&mut origin, ADDRESS.parse().unwrap()));
                answer.unwrap().origin.unwrap().session_version.parse().unwrap()
            })
            .collect();
        assert_eq!(versions, [1, 2, 3]);
    }
}
