//! RFC 4733 telephone-event payloads (DTMF digits and other named events).

/// Size of one event block: event, E/R/volume, duration.
const EVENT_BLOCK_LEN: usize = 4;

/// The first event block of a telephone-event payload. RFC 4733 §2.5.1.5 lets a packet carry further
/// blocks (redundant copies of earlier events); those are ignored, since the earlier packets carry them too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventBlock {
    /// Event code (0–9, 10 = `*`, 11 = `#`, 12–15 = A–D for DTMF).
    pub event: u8,
    /// Set on the final packet(s) of the event.
    pub end: bool,
    /// Power level in −dBm0 (0–63).
    pub volume: u8,
    /// Duration so far, in RTP clock units from the event's timestamp.
    pub duration: u16,
}

impl EventBlock {
    /// Parses the first block, or `None` when the payload is shorter than one block.
    pub(crate) fn parse(payload: &[u8]) -> Option<EventBlock> {
        let block = payload.get(..EVENT_BLOCK_LEN)?;
        let (&event, &flags) = (block.first()?, block.get(1)?);
        let duration = u16::from_be_bytes([*block.get(2)?, *block.get(3)?]);
        Some(EventBlock {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_first_block() {
        assert_eq!(
            EventBlock::parse(&[11, 0x8A, 0x03, 0x20, 1, 2, 3, 4]),
            Some(EventBlock {
                event: 11,
                end: true,
                volume: 10,
                duration: 800
            })
        );
        assert_eq!(
            EventBlock::parse(&[5, 0x7F, 0, 160]),
            Some(EventBlock {
                event: 5,
                end: false,
                volume: 63,
                duration: 160
            })
        );
        assert_eq!(EventBlock::parse(&[1, 2, 3]), None);
    }
}
