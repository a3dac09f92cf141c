//! Fuzzes the in-band DTMF detector and masker with arbitrary sample streams in arbitrary chunks. The
//! first byte picks the rate (8 or 16 kHz); the rest is read as `[chunk length, position skip, samples…]`
//! records of little-endian i16. Checks: no panic, tones ordered and inside the samples fed, the masker's
//! output as long as its input and identical to a one-chunk run.

#![no_main]

use airlock_media::{DtmfDetector, DtmfMasker, DtmfTone};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let rate = if selector % 2 == 0 { 8000 } else { 16000 };
    let (Ok(mut detector), Ok(mut masker)) = (DtmfDetector::new(rate), DtmfMasker::new(rate)) else {
        return;
    };

    let mut tones: Vec<DtmfTone> = Vec::new();
    // Runs of contiguous positions fed to the detector.
    let mut fed: Vec<(u64, u64)> = Vec::new();
    let mut all = Vec::new();
    let (mut output, mut masker_tones) = (Vec::new(), Vec::new());
    let mut position = 0u64;
    while let [length, skip, tail @ ..] = rest {
        // Samples are repeated so that short inputs still make tones long enough to detect.
        let bytes = tail.get(..usize::from(*length) * 2).unwrap_or(tail);
        let samples: Vec<i16> = bytes
            .chunks_exact(2)
            .flat_map(|b| std::iter::repeat_n(i16::from_le_bytes([b[0], b[1]]), 1 + usize::from(skip % 4)))
            .collect();
        if skip % 8 == 7 {
            position += u64::from(*skip) * 64;
        }
        detector
            .push(position, &samples, &mut tones)
            .expect("positions only move forward");
        let end = position + samples.len() as u64;
        // Contiguous chunks extend the current run; a skip starts a new one.
        match fed.last_mut() {
            Some(run) if run.1 == position => run.1 = end,
            _ => fed.push((position, end)),
        }
        position = end;
        let before = output.len();
        masker.push(&samples, &mut output, &mut masker_tones);
        assert_eq!(output.len() - before, samples.len());
        all.extend_from_slice(&samples);
        rest = &tail[bytes.len()..];
    }
    detector.flush(&mut tones);
    masker.flush(&mut output, &mut masker_tones);

    for pair in tones.windows(2) {
        assert!(
            pair[0].end_sample <= pair[1].start_sample,
            "tones ordered and disjoint"
        );
    }
    for tone in &tones {
        assert!(tone.start_sample < tone.end_sample);
        // A tone lies within one contiguous run of fed samples (a gap ends it).
        assert!(
            fed.iter()
                .any(|&(start, end)| start <= tone.start_sample && tone.end_sample <= end)
        );
    }

    let mut single = DtmfMasker::new(rate).expect("supported rate");
    let (mut single_output, mut single_tones) = (Vec::new(), Vec::new());
    single.push(&all, &mut single_output, &mut single_tones);
    single.flush(&mut single_output, &mut single_tones);
    assert_eq!(output, single_output, "masker output independent of chunking");
    assert_eq!(masker_tones, single_tones);
    assert!(
        masker_tones
            .iter()
            .all(|tone| tone.end_sample <= all.len() as u64)
    );
});
