//! A recording process killed with SIGKILL: `recover` finalises its directory without any key, `age -d`
//! decrypts it, the WAV sizes match the data, and the audio is the written signal up to the last checkpoint.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use airlock_recording::{Recipient, RecordingWriter, WavFormat, recover};
use support::{Scratch, samples_of_consistent_wav, signal};

const CHILD_DIR_VAR: &str = "AIRLOCK_RECORDING_KILL_CHILD_DIR";
const CHILD_RECIPIENT_VAR: &str = "AIRLOCK_RECORDING_KILL_CHILD_RECIPIENT";
const FORMAT: WavFormat = WavFormat {
    sample_rate: 8000,
    channels: 2,
};
const FRAMES_PER_CHECKPOINT: u64 = 8000;
const BLOCK_FRAMES: u64 = 160;

/// The child half of `survives_kill_9`: does nothing unless started by it. Records 8 kHz stereo in 20 ms
/// blocks with a checkpoint per second of audio, publishing the checkpointed frame count after each.
#[test]
fn child_records_until_killed() {
    let (Ok(dir), Ok(recipient)) = (std::env::var(CHILD_DIR_VAR), std::env::var(CHILD_RECIPIENT_VAR)) else {
        return;
    };
    let dir = Path::new(&dir);
    let recipient = Recipient::parse(&recipient).unwrap();
    let mut writer = RecordingWriter::create(&dir.join("call"), &[recipient], FORMAT).unwrap();
    let started = Instant::now();
    let mut frames = 0u64;
    while started.elapsed() < Duration::from_secs(60) {
        let block = signal(frames * 2, (BLOCK_FRAMES * 2) as usize);
        writer.write_interleaved(&block).unwrap();
        frames += BLOCK_FRAMES;
        if frames.is_multiple_of(FRAMES_PER_CHECKPOINT) {
            writer.checkpoint().unwrap();
            std::fs::write(dir.join("progress.tmp"), frames.to_string()).unwrap();
            std::fs::rename(dir.join("progress.tmp"), dir.join("progress")).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn checkpointed_frames(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("progress"))
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

#[test]
fn survives_kill_9() {
    let scratch = Scratch::new();
    for (round, kill_after_seconds) in [1u64, 7, 30].into_iter().enumerate() {
        let dir = scratch.recording_dir(&format!("round-{round}"));
        std::fs::create_dir_all(dir.join("call")).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_records_until_killed",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CHILD_DIR_VAR, &dir)
            .env(CHILD_RECIPIENT_VAR, scratch.recipients[0].to_string())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while checkpointed_frames(&dir) < kill_after_seconds * FRAMES_PER_CHECKPOINT {
            assert!(Instant::now() < deadline, "the child made no progress");
            assert!(
                child.try_wait().unwrap().is_none(),
                "the child exited before it was killed"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let published = checkpointed_frames(&dir);
        let finished = recover(&dir.join("call"))
            .unwrap()
            .expect("an interrupted recording");
        let samples = samples_of_consistent_wav(&scratch.decrypt(&finished.path));
        let frames = samples.len() as u64 / 2;
        // The child may have completed one more checkpoint before publishing it.
        assert!(
            frames == published || frames == published + FRAMES_PER_CHECKPOINT,
            "recovered {frames} frames, last published checkpoint {published}"
        );
        assert_eq!(finished.frames, frames);
        assert_eq!(
            samples,
            signal(0, samples.len()),
            "recovered audio is the written signal"
        );
    }
}
