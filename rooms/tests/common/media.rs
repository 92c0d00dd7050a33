//! Real encoded media for recording tests, made by ffmpeg, and ffprobe's view of a
//! recorded file. Shared by the integration tests (`common`) and the recorder's unit
//! tests (`rooms/src/record/tests.rs`, through `#[path]`). Both tools come with
//! Debian's `ffmpeg`, which scripts/test installs; a test fails when they are
//! missing.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use rtc::media::io::ivf_reader::IVFReader;
use rtc::media::io::ogg_reader::OggReader;

/// VP8 frames (30 a second) and Opus packets (20 ms each).
pub struct EncodedMedia {
    pub video: Vec<Bytes>,
    pub audio: Vec<Bytes>,
}

/// `seconds` of a 320×240 test pattern in VP8, with a keyframe a second, and of a
/// tone in Opus, 48 kHz stereo.
pub fn encoded_media(seconds: u32) -> EncodedMedia {
    let dir = std::env::temp_dir().join(format!(
        "huddle-media-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let (ivf, ogg) = (dir.join("v.ivf"), dir.join("a.ogg"));
    let t = seconds.to_string();
    let runs = [
        (
            vec![
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=30",
                "-t",
                &t,
            ],
            vec!["-c:v", "libvpx", "-b:v", "300k", "-g", "30", "-f", "ivf"],
            &ivf,
        ),
        (
            vec![
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                &t,
                "-ac",
                "2",
            ],
            // A page per packet: each page read is one packet.
            vec![
                "-c:a",
                "libopus",
                "-frame_duration",
                "20",
                "-page_duration",
                "20000",
                "-f",
                "ogg",
            ],
            &ogg,
        ),
    ];
    for (input, output, file) in runs {
        let status = tool("ffmpeg")
            .args(["-v", "error", "-y"])
            .args(input)
            .args(output)
            .arg(file)
            .status()
            .expect("ffmpeg runs");
        assert!(status.success(), "ffmpeg made {}", file.display());
    }
    let mut video = Vec::new();
    let (mut reader, _) =
        IVFReader::new(std::fs::File::open(&ivf).expect("the IVF file")).expect("an IVF header");
    while let Ok((frame, _)) = reader.parse_next_frame() {
        video.push(frame.freeze());
    }
    let mut audio = Vec::new();
    let (mut reader, _) = OggReader::new(std::fs::File::open(&ogg).expect("the Ogg file"), true)
        .expect("an Opus head");
    while let Ok((page, _)) = reader.parse_next_page() {
        if !page.starts_with(b"OpusTags") {
            audio.push(page.freeze());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    EncodedMedia { video, audio }
}

/// ffprobe's JSON about `file` (`-show_streams -show_format`), and what
/// `ffmpeg -v error` prints decoding all of it: nothing for a sound file.
pub fn probe(file: &Path) -> (serde_json::Value, String) {
    let out = tool("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let decode = tool("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    (
        serde_json::from_slice(&out.stdout).expect("ffprobe's JSON"),
        String::from_utf8_lossy(&decode.stderr).into_owned(),
    )
}

/// `name`, or a failed test saying how to install it.
fn tool(name: &str) -> Command {
    if Command::new(name).arg("-version").output().is_err() {
        panic!("{name} is needed to check recordings: install Debian's ffmpeg (scripts/test does)");
    }
    Command::new(name)
}
