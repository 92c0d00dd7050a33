//! The recorder's parts on their own: the frame assembler with hand-made RTP
//! packets, the spool, the writer's protocol, and the WebM checked by ffprobe with
//! real VP8 and Opus made by ffmpeg.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::frames::{Assembler, vp8_keyframe_size, vp9_keyframe_size};
use super::mux::write_webm;
use super::spool::{SpoolWriter, read_all};
use super::writer::{QUEUE, channel, run};
use super::*;
use crate::{PeerId, Source};
use media::{EncodedMedia, encoded_media, probe};

#[path = "../../tests/common/media.rs"]
mod media;

fn meta(key: u32, peer: &str, kind: TrackKind) -> TrackMeta {
    let (source, codec, clock_rate) = match kind {
        TrackKind::Audio => (Source::Microphone, "audio/opus", 48_000),
        TrackKind::Video => (Source::Camera, "video/VP8", 90_000),
    };
    TrackMeta {
        key,
        peer: PeerId(peer.to_owned()),
        kind,
        source,
        codec: codec.to_owned(),
        clock_rate,
    }
}

/// A VP8 RTP payload: the descriptor (S set when `start`), then `data`.
fn vp8_packet(start: bool, data: &[u8]) -> Bytes {
    let mut p = vec![if start { 0x10 } else { 0x00 }];
    p.extend_from_slice(data);
    p.into()
}

/// A VP8 keyframe's first bytes (320×240), or an interframe's.
fn vp8_frame_start(keyframe: bool) -> Vec<u8> {
    if keyframe {
        vec![0x10, 0, 0, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]
    } else {
        vec![0x11, 0, 0, 7, 7, 7]
    }
}

/// Video frame `n` of a test stream: three packets, sequence numbers from
/// `3 × n`, timestamp `3000 × n`. Returns (seq, timestamp, marker, payload).
fn video_frame(n: u16, keyframe: bool) -> Vec<(u16, u32, bool, Bytes)> {
    let seq = n.wrapping_mul(3);
    let ts = u32::from(n).wrapping_mul(3000);
    vec![
        (seq, ts, false, vp8_packet(true, &vp8_frame_start(keyframe))),
        (
            seq.wrapping_add(1),
            ts,
            false,
            vp8_packet(false, &[n as u8; 4]),
        ),
        (
            seq.wrapping_add(2),
            ts,
            true,
            vp8_packet(false, &[!n as u8; 4]),
        ),
    ]
}

/// The whole frame `video_frame(n, keyframe)` depacketizes to.
fn video_frame_data(n: u16, keyframe: bool) -> Vec<u8> {
    let mut data = vp8_frame_start(keyframe);
    data.extend_from_slice(&[n as u8; 4]);
    data.extend_from_slice(&[!n as u8; 4]);
    data
}

fn video(started: Instant) -> Assembler {
    Assembler::new(Codec::Vp8, started, meta(1, "alice", TrackKind::Video))
}

fn push_all(a: &mut Assembler, at: Instant, packets: &[(u16, u32, bool, Bytes)]) {
    for (seq, ts, marker, payload) in packets {
        a.push(at, *seq, *ts, *marker, payload);
    }
}

/// The data of the frames `a` has ready, in order.
fn ready_data(a: &mut Assembler) -> Vec<Vec<u8>> {
    a.take_ready()
        .into_iter()
        .map(|f| f.data.to_vec())
        .collect()
}

#[test]
fn packets_reordered_within_a_frame_and_across_frames_make_whole_frames_in_order() {
    let t0 = Instant::now();
    let mut a = video(t0);
    let mut packets = video_frame(0, true);
    packets.extend(video_frame(1, false));
    packets.extend(video_frame(2, false));
    // 0 2 1 4 3 6 5 8 7: every other pair swapped.
    let order = [0, 2, 1, 4, 3, 6, 5, 8, 7];
    for i in order {
        let (seq, ts, marker, payload) = &packets[i];
        a.push(t0, *seq, *ts, *marker, payload);
    }
    let frames = a.take_ready();
    assert_eq!(frames.len(), 3);
    for (n, frame) in frames.iter().enumerate() {
        assert_eq!(frame.data, video_frame_data(n as u16, n == 0));
        assert_eq!(frame.keyframe, n == 0);
        // 3000 ticks of 90 kHz apart.
        assert_eq!(
            frame.at,
            Duration::from_nanos(n as u64 * 1_000_000_000 / 30)
        );
    }
}

#[test]
fn a_lost_packet_drops_its_frame_and_video_waits_for_a_keyframe() {
    let t0 = Instant::now();
    let mut a = video(t0);
    push_all(&mut a, t0, &video_frame(0, true));
    assert!(
        a.take_wants_keyframe(),
        "a new video track asks for a keyframe"
    );
    let mut second = video_frame(1, false);
    second.remove(1);
    push_all(&mut a, t0, &second);
    push_all(&mut a, t0, &video_frame(2, false));
    // The middle packet of frame 1 never comes: given up after the wait.
    let later = t0 + Duration::from_millis(300);
    push_all(&mut a, later, &video_frame(3, false));
    assert!(a.take_wants_keyframe(), "the gap asks for a keyframe");
    push_all(&mut a, later, &video_frame(4, false));
    assert!(a.take_wants_keyframe(), "still waiting, it asks again");
    push_all(&mut a, later, &video_frame(5, true));
    push_all(&mut a, later, &video_frame(6, false));
    let frames = ready_data(&mut a);
    assert_eq!(
        frames,
        [
            video_frame_data(0, true),
            video_frame_data(5, true),
            video_frame_data(6, false)
        ],
        "frames 1 (incomplete) to 4 (no keyframe before them) are left out"
    );
}

#[test]
fn a_padding_packet_between_frames_is_no_loss() {
    let t0 = Instant::now();
    let mut a = video(t0);
    push_all(&mut a, t0, &video_frame(0, true));
    a.take_wants_keyframe();
    // Padding only, with sequence number 3; frame 1's packets move up by one.
    a.push(t0, 3, 0, false, &Bytes::new());
    let mut next = video_frame(1, false);
    for p in &mut next {
        p.0 += 1;
    }
    push_all(&mut a, t0, &next);
    assert!(!a.take_wants_keyframe(), "no gap, no keyframe wanted");
    let frames = ready_data(&mut a);
    assert_eq!(
        frames,
        [video_frame_data(0, true), video_frame_data(1, false)]
    );
}

#[test]
fn a_packet_later_than_the_wait_is_ignored_and_a_duplicate_too() {
    let t0 = Instant::now();
    let mut a = video(t0);
    let first = video_frame(0, true);
    push_all(&mut a, t0, &first[..2]);
    push_all(&mut a, t0, &video_frame(1, true));
    let late = t0 + Duration::from_millis(300);
    push_all(&mut a, late, &video_frame(2, true));
    // Frame 0's last packet, after its gap was given up; then a duplicate.
    push_all(&mut a, late, &first[2..]);
    push_all(&mut a, late, &video_frame(2, true));
    let frames = ready_data(&mut a);
    assert_eq!(
        frames,
        [video_frame_data(1, true), video_frame_data(2, true)]
    );
}

#[test]
fn sequence_numbers_and_timestamps_wrap() {
    let t0 = Instant::now();
    let mut a = video(t0);
    // Frames 21844 and 21845 span sequence numbers 65532..=65537, that is ..=1.
    let mut packets = video_frame(21_844, true);
    packets.extend(video_frame(21_845, false));
    for p in &mut packets {
        // Timestamps that wrap between the two frames.
        p.1 = p.1.wrapping_add(u32::MAX - 21_844 * 3000 - 1000);
    }
    packets.swap(3, 4);
    push_all(&mut a, t0, &packets);
    let frames = a.take_ready();
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(
        frames[1].at - frames[0].at,
        Duration::from_micros(33_333) + Duration::from_nanos(333)
    );
}

#[test]
fn opus_packets_are_frames_stamped_from_their_first_arrival_by_their_timestamps() {
    let t0 = Instant::now();
    let mut a = Assembler::new(Codec::Opus, t0, meta(2, "bob", TrackKind::Audio));
    let arrival = t0 + Duration::from_millis(1500);
    for i in 0..5u16 {
        // Arrival times vary; the timestamps say 20 ms apart.
        let at = arrival + Duration::from_millis(u64::from(i) * 7);
        a.push(
            at,
            100 + i,
            960 * u32::from(i),
            false,
            &Bytes::from(vec![i as u8; 3]),
        );
    }
    assert!(
        !a.take_wants_keyframe(),
        "audio has no keyframes to ask for"
    );
    let frames = a.take_ready();
    let times: Vec<u64> = frames.iter().map(|f| f.at.as_millis() as u64).collect();
    assert_eq!(times, [1500, 1520, 1540, 1560, 1580]);
    assert!(frames.iter().all(|f| f.keyframe && f.data.len() == 3));
}

#[test]
fn keyframe_sizes_are_read_from_vp8_and_vp9_headers() {
    assert_eq!(vp8_keyframe_size(&vp8_frame_start(true)), Some((320, 240)));
    assert_eq!(vp8_keyframe_size(&vp8_frame_start(false)), None);
    // VP9 profile 0 keyframe, 640×360: frame marker 2, profile 0, show_existing 0,
    // frame_type 0, show_frame 1, error_res 0, sync code, color space 2 (BT.709),
    // color range 0, then width − 1 and height − 1 in 16 bits each.
    let mut bits = String::from("10" /* marker */);
    bits += "00" /* profile */;
    bits += "0" /* show_existing_frame */;
    bits += "0" /* keyframe */;
    bits += "10";
    bits += "010010011000001101000010";
    bits += "010" /* color space */;
    bits += "0";
    bits += &format!("{:016b}{:016b}", 639, 359);
    while bits.len() % 8 != 0 {
        bits.push('0');
    }
    let bytes: Vec<u8> = bits
        .as_bytes()
        .chunks(8)
        .map(|b| u8::from_str_radix(std::str::from_utf8(b).unwrap(), 2).unwrap())
        .collect();
    assert_eq!(vp9_keyframe_size(&bytes), Some((640, 360)));
    let mut inter = bytes.clone();
    inter[0] |= 0x04; // frame_type 1
    assert_eq!(vp9_keyframe_size(&inter), None);
}

/// A directory under the system's temporary one, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("huddle-rec-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn frame(track: u32, at_ms: u64, keyframe: bool, data: &[u8]) -> Entry {
    Entry::Frame(Frame {
        track,
        at: Duration::from_millis(at_ms),
        keyframe,
        data: Bytes::copy_from_slice(data),
    })
}

#[test]
fn the_spool_reads_back_what_was_written_and_ignores_a_truncated_tail() {
    let dir = TempDir::new("spool");
    let path = dir.0.join("deep/er/rec.spool");
    let entries = vec![
        Entry::Track(meta(7, "alice", TrackKind::Audio)),
        frame(7, 0, true, b"first"),
        Entry::Track(TrackMeta {
            source: Source::Screen,
            ..meta(9, "bób", TrackKind::Video)
        }),
        frame(9, 40, true, &[1; 1000]),
        frame(7, 20, true, b""),
        frame(7, 3_600_000, false, b"last"),
    ];
    let mut spool = SpoolWriter::create(&path).unwrap();
    for entry in &entries {
        spool.append(entry).unwrap();
    }
    let size = spool.size();
    spool.finish().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    assert_eq!(read_all(&path).unwrap(), entries);
    // A crash in the middle of the last record: everything before it is read.
    for cut in [1, 5, 10] {
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(size - cut).unwrap();
        assert_eq!(read_all(&path).unwrap(), entries[..5], "cut {cut} bytes");
    }
    // Not a spool at all.
    std::fs::write(&path, b"something else").unwrap();
    assert!(read_all(&path).is_err());
}

/// Runs a writer in a thread, as the room would: returns the room's end, what
/// the writer asks of the room, and what it reports.
fn writer(
    spec: &RecordingSpec,
    spool: SpoolWriter,
) -> (
    Sink,
    std::sync::mpsc::Receiver<StopReason>,
    std::sync::mpsc::Receiver<RecordingEvent>,
    std::thread::JoinHandle<()>,
) {
    let (sink, feed) = channel(QUEUE);
    let (asks, asked) = std::sync::mpsc::channel();
    let (reports, reported) = std::sync::mpsc::channel();
    let spec = spec.clone();
    let thread = std::thread::spawn(move || {
        run(
            &spec,
            spool,
            feed,
            move |reason| asks.send(reason).unwrap(),
            move |event| reports.send(event).unwrap(),
        );
    });
    (sink, asked, reported, thread)
}

/// Recording `rec-1` to `rec.webm` in `dir`, up to `max_bytes` and a minute.
fn spec_in(dir: &TempDir, max_bytes: u64) -> RecordingSpec {
    RecordingSpec {
        id: "rec-1".into(),
        path: dir.0.join("rec.webm"),
        max_bytes,
        max_duration: Duration::from_secs(60),
    }
}

#[test]
fn a_writer_at_its_size_limit_asks_the_room_to_stop_and_reports_stopped_then_completed() {
    let dir = TempDir::new("limit");
    let spec = spec_in(&dir, 5_000);
    let spool = SpoolWriter::create(&spool_path(&spec.path)).unwrap();
    let (sink, asked, reported, thread) = writer(&spec, spool);
    sink.frames
        .try_send(Entry::Track(meta(1, "alice", TrackKind::Audio)))
        .unwrap();
    let mut sent = 0;
    let reason = loop {
        sink.frames
            .try_send(frame(1, sent * 20, true, &[0xfc; 100]))
            .unwrap();
        sent += 1;
        if let Ok(reason) = asked.recv_timeout(Duration::from_millis(20)) {
            break reason;
        }
        assert!(sent < 100, "the writer never asked to stop");
    };
    assert_eq!(reason, StopReason::Limit);
    // The room stops as asked: the reason, then the queue closes.
    sink.stop(StopReason::Limit);
    thread.join().unwrap();
    let events: Vec<RecordingEvent> = reported.try_iter().collect();
    assert_eq!(
        events[0],
        RecordingEvent::Stopped {
            reason: StopReason::Limit
        }
    );
    let RecordingEvent::Completed(result) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(events.len(), 2);
    // 42 bytes before the frames (magic, track), 118 a frame record: the spool
    // reached 5000 bytes with the 43rd, and nothing after it was written.
    assert_eq!(result.tracks[0].frames, 43);
    assert_eq!(result.size, std::fs::metadata(&spec.path).unwrap().len());
    assert!(!spool_path(&spec.path).exists(), "the spool is removed");
}

#[test]
fn a_recording_without_frames_fails_with_no_media_and_leaves_no_files() {
    let dir = TempDir::new("empty");
    let spec = spec_in(&dir, 5_000);
    let spool = SpoolWriter::create(&spool_path(&spec.path)).unwrap();
    let (sink, _asked, reported, thread) = writer(&spec, spool);
    sink.frames
        .try_send(Entry::Track(meta(1, "alice", TrackKind::Video)))
        .unwrap();
    // The room went away without a word: its call ended.
    drop(sink);
    thread.join().unwrap();
    let events: Vec<RecordingEvent> = reported.try_iter().collect();
    assert_eq!(
        events,
        [
            RecordingEvent::Stopped {
                reason: StopReason::CallEnded
            },
            RecordingEvent::Failed {
                error: "no media was recorded".into()
            }
        ]
    );
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        0,
        "no files left"
    );
}

#[test]
fn a_writer_that_cannot_write_asks_the_room_to_stop_and_reports_stopped_then_failed() {
    let dir = TempDir::new("full");
    let spec = spec_in(&dir, 1 << 30);
    // A disk that is full: every write fails with ENOSPC.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let (sink, asked, reported, thread) = writer(&spec, SpoolWriter::on(full));
    sink.frames
        .try_send(Entry::Track(meta(1, "alice", TrackKind::Audio)))
        .unwrap();
    sink.frames
        .try_send(frame(1, 0, true, &[0xfc; 100]))
        .unwrap();
    let reason = asked.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(reason, StopReason::Failed);
    sink.stop(StopReason::Failed);
    thread.join().unwrap();
    let events: Vec<RecordingEvent> = reported.try_iter().collect();
    assert_eq!(
        events[0],
        RecordingEvent::Stopped {
            reason: StopReason::Failed
        }
    );
    assert!(
        matches!(&events[1], RecordingEvent::Failed { error } if error.contains("No space left")),
        "{events:?}"
    );
    assert_eq!(events.len(), 2);
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        0,
        "no files left"
    );
}

/// Real media: 3 s of VP8 and Opus, made once per test run.
fn media() -> &'static EncodedMedia {
    static MEDIA: OnceLock<EncodedMedia> = OnceLock::new();
    MEDIA.get_or_init(|| encoded_media(3))
}

/// A spool for `path` as a room of two would write it: alice from the start, bob
/// from 1 s (so his 3 s end at 4 s); each an Opus and a VP8 track; in arrival
/// order, audio a little ahead of video. Returns each record's end in the spool.
fn write_spool(path: &Path) -> Vec<u64> {
    let EncodedMedia { video, audio } = media();
    let mut spool = SpoolWriter::create(&spool_path(path)).unwrap();
    let mut ends = Vec::new();
    let mut append = |spool: &mut SpoolWriter, entry: Entry| {
        spool.append(&entry).unwrap();
        ends.push(spool.size());
    };
    append(&mut spool, Entry::Track(meta(1, "alice", TrackKind::Audio)));
    append(&mut spool, Entry::Track(meta(2, "alice", TrackKind::Video)));
    let mut events: Vec<(u64, Entry)> = Vec::new();
    for (offset, (a, v)) in [(0, (1, 2)), (1000, (3, 4))] {
        for (i, packet) in audio.iter().enumerate() {
            let at = offset + 20 * i as u64;
            events.push((at, frame(a, at, true, packet)));
        }
        for (i, data) in video.iter().enumerate() {
            let at = offset + i as u64 * 1000 / 30;
            // Video arrives 15 ms after its time (the spool is in arrival order).
            events.push((at + 15, frame(v, at, data[0] & 1 == 0, data)));
        }
    }
    events.sort_by_key(|(arrival, _)| *arrival);
    let mut bob = false;
    for (arrival, entry) in events {
        if arrival >= 1000 && !bob {
            bob = true;
            append(&mut spool, Entry::Track(meta(3, "bob", TrackKind::Audio)));
            append(&mut spool, Entry::Track(meta(4, "bob", TrackKind::Video)));
        }
        append(&mut spool, entry);
    }
    spool.finish().unwrap();
    ends
}

/// Each stream's (codec type, codec name).
fn codecs(probe: &serde_json::Value) -> Vec<(String, String)> {
    probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["codec_type"].to_string(), s["codec_name"].to_string()))
        .collect()
}

/// The format's duration, seconds.
fn duration(probe: &serde_json::Value) -> f64 {
    probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn real_vp8_and_opus_are_muxed_into_a_webm_that_ffprobe_reads_and_ffmpeg_decodes_without_error() {
    let dir = TempDir::new("mux");
    let path = dir.0.join("call/rec.webm");
    write_spool(&path);
    let result = write_webm(&path, 3).unwrap();
    assert!(!spool_path(&path).exists(), "the spool is removed");
    assert_eq!(result.size, std::fs::metadata(&path).unwrap().len());
    assert_eq!(result.dropped_frames, 3);
    let EncodedMedia { video, audio } = media();
    let tracks: Vec<(&str, TrackKind, u64, u64, u64)> = result
        .tracks
        .iter()
        .map(|t| {
            (
                t.peer.0.as_str(),
                t.kind,
                t.start.as_millis() as u64,
                t.end.as_millis() as u64,
                t.frames,
            )
        })
        .collect();
    let (v, a) = (video.len() as u64, audio.len() as u64);
    let video_end = (v - 1) * 1000 / 30;
    let audio_end = (a - 1) * 20;
    assert_eq!(
        tracks,
        [
            ("alice", TrackKind::Audio, 0, audio_end, a),
            ("alice", TrackKind::Video, 0, video_end, v),
            ("bob", TrackKind::Audio, 1000, 1000 + audio_end, a),
            ("bob", TrackKind::Video, 1000, 1000 + video_end, v),
        ]
    );
    assert_eq!(
        result.duration.as_millis() as u64,
        1000 + audio_end.max(video_end)
    );

    let (probe, errors) = probe(&path);
    assert_eq!(errors, "", "ffmpeg decodes the file without errors");
    let expected: Vec<(String, String)> = ["opus", "vp8", "opus", "vp8"]
        .iter()
        .map(|c| {
            let kind = if *c == "opus" { "audio" } else { "video" };
            (format!("\"{kind}\""), format!("\"{c}\""))
        })
        .collect();
    assert_eq!(codecs(&probe), expected);
    for s in probe["streams"].as_array().unwrap() {
        if s["codec_type"] == "video" {
            assert_eq!((&s["width"], &s["height"]), (&320.into(), &240.into()));
        } else {
            assert_eq!(
                (&s["sample_rate"], &s["channels"]),
                (&"48000".into(), &2.into())
            );
        }
    }
    assert_eq!(probe["format"]["format_name"], "matroska,webm");
    let duration = duration(&probe);
    assert!((duration - 4.0).abs() < 0.1, "duration {duration}");
}

#[test]
fn recover_writes_what_a_spool_cut_mid_record_holds_and_removes_it() {
    let dir = TempDir::new("recover");
    let path = dir.0.join("rec.webm");
    let ends = write_spool(&path);
    // The process died two thirds of the way through, in the middle of a record.
    let cut = ends[ends.len() * 2 / 3] + 7;
    let spool = std::fs::OpenOptions::new()
        .write(true)
        .open(spool_path(&path))
        .unwrap();
    spool.set_len(cut).unwrap();
    let result = recover(&path).unwrap();
    assert!(!spool_path(&path).exists(), "the spool is removed");
    assert_eq!(result.tracks.len(), 4);
    let seconds = result.duration.as_secs_f64();
    assert!((2.0..3.5).contains(&seconds), "recovered {seconds} s");
    let (probe, errors) = probe(&path);
    assert_eq!(
        errors, "",
        "ffmpeg decodes the recovered file without errors"
    );
    assert_eq!(codecs(&probe).len(), 4);
    let duration = duration(&probe);
    assert!((duration - seconds).abs() < 0.1, "duration {duration}");

    let error = recover(&path).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
}
