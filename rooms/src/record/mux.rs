//! Writing a spool as WebM, with libwebm (the `webm` crate).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use webm::mux::{AudioCodecId, SegmentBuilder, SegmentMode, TrackNum, VideoCodecId, Writer};

use super::frames::{vp8_keyframe_size, vp9_keyframe_size};
use super::spool::{Record, SpoolReader};
use super::{Codec, RecordedTrack, RecordingResult, TrackKind, TrackMeta, spool_path};

/// Tracks a WebM file holds at most (libwebm numbers them 1 to 126).
const MAX_TRACKS: usize = 126;
/// How far frames may be out of timestamp order in the spool (it holds them in
/// arrival order) and still be written in order: libwebm takes only rising
/// timestamps across all tracks. A frame later than this is written at the time of
/// the frame before it.
const MERGE_WINDOW: Duration = Duration::from_secs(10);

/// What the first pass learns of a track.
struct Summary {
    meta: TrackMeta,
    codec: Option<Codec>,
    frames: u64,
    start: Duration,
    end: Duration,
    /// A video track's size, from its first frame (a keyframe).
    size: Option<(u32, u32)>,
    /// Its number in the WebM file, once added.
    number: Option<TrackNum>,
}

/// Writes `path` from its spool, which is removed whatever the outcome; a partial
/// `path` too when it fails. `dropped` is how many frames the writer dropped.
pub(super) fn write_webm(path: &Path, dropped: u64) -> io::Result<RecordingResult> {
    let spool = spool_path(path);
    let written = mux(&spool, path, dropped);
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(&spool);
    written
}

fn mux(spool: &Path, path: &Path, dropped: u64) -> io::Result<RecordingResult> {
    let mut tracks = summarize(spool)?;
    if tracks.iter().all(|t| t.frames == 0 || t.codec.is_none()) {
        return Err(io::Error::other("no media was recorded"));
    }
    let webm = |e: webm::mux::Error| io::Error::other(format!("writing WebM: {e}"));
    let file = BufWriter::with_capacity(256 << 10, File::create(path)?);
    let mut builder = SegmentBuilder::new(Writer::new(file))
        .and_then(|b| b.set_mode(SegmentMode::File))
        .and_then(|b| b.set_writing_app("Huddle"))
        .map_err(webm)?;
    let mut added = 0;
    for track in tracks.iter_mut().filter(|t| t.frames > 0) {
        let Some(codec) = track.codec else { continue };
        if added == MAX_TRACKS {
            tracing::warn!(peer = %track.meta.peer, "a WebM file holds {MAX_TRACKS} tracks: one more is left out");
            continue;
        }
        let number = match codec {
            Codec::Opus => {
                let (b, audio) = builder
                    .add_audio_track(48_000, 2, AudioCodecId::Opus, None)
                    .map_err(webm)?;
                builder = b.set_codec_private(audio, &opus_head()).map_err(webm)?;
                TrackNum::from(audio)
            }
            Codec::Vp8 | Codec::Vp9 => {
                // libwebm needs a size; a keyframe always has one, but a header it
                // cannot read gets a common one (players use the frames' own).
                let (width, height) = track.size.unwrap_or((640, 480));
                let id = if codec == Codec::Vp8 {
                    VideoCodecId::VP8
                } else {
                    VideoCodecId::VP9
                };
                let (b, video) = builder
                    .add_video_track(width, height, id, None)
                    .map_err(webm)?;
                builder = b;
                TrackNum::from(video)
            }
        };
        track.number = Some(number);
        added += 1;
    }
    let mut segment = builder.build();
    let numbers: HashMap<u32, TrackNum> = tracks
        .iter()
        .filter_map(|t| Some((t.meta.key, t.number?)))
        .collect();
    let mut reader = SpoolReader::open(spool)?;
    // Frame data is read by position, apart from the records.
    let data = File::open(spool)?;
    // Frames by time, then by their order in the spool: (ns, order, number, offset,
    // len, keyframe).
    let mut window = BinaryHeap::new();
    let mut order = 0u64;
    let mut latest = 0u64;
    let mut written = 0u64;
    let mut write =
        |segment: &mut webm::mux::Segment<_>,
         (at, _, number, offset, len, keyframe): (u64, u64, TrackNum, u64, u32, bool)|
         -> io::Result<()> {
            let mut frame = vec![0; len as usize];
            data.read_exact_at(&mut frame, offset)?;
            written = written.max(at);
            segment
                .add_frame(number, &frame, written, keyframe)
                .map_err(webm)
        };
    while let Some(record) = reader.next_record()? {
        let Record::Frame {
            track,
            at,
            keyframe,
            offset,
            len,
        } = record
        else {
            continue;
        };
        let Some(number) = numbers.get(&track) else {
            continue;
        };
        let at = nanos(at);
        latest = latest.max(at);
        order += 1;
        window.push(Reverse((at, order, *number, offset, len, keyframe)));
        while let Some(Reverse(first)) = window.peek()
            && first.0 + nanos(MERGE_WINDOW) <= latest
        {
            let Some(Reverse(first)) = window.pop() else {
                break;
            };
            write(&mut segment, first)?;
        }
    }
    while let Some(Reverse(frame)) = window.pop() {
        write(&mut segment, frame)?;
    }
    let duration = tracks
        .iter()
        .filter(|t| t.number.is_some())
        .map(|t| t.end)
        .max()
        .unwrap_or_default();
    // In the segment's timecode scale, milliseconds.
    let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let writer = segment
        .finalize(Some(duration_ms))
        .map_err(|_| io::Error::other("writing WebM: finalizing failed"))?;
    let file = writer
        .into_inner()
        .into_inner()
        .map_err(|e| e.into_error())?;
    file.sync_data()?;
    let size = file.metadata()?.len();
    Ok(RecordingResult {
        path: path.to_owned(),
        size,
        duration,
        tracks: tracks
            .into_iter()
            .filter(|t| t.number.is_some())
            .map(|t| RecordedTrack {
                peer: t.meta.peer,
                kind: t.meta.kind,
                source: t.meta.source,
                codec: t.meta.codec,
                start: t.start,
                end: t.end,
                frames: t.frames,
            })
            .collect(),
        dropped_frames: dropped,
    })
}

/// The first pass: each track, its frame count, first and last time, and size.
fn summarize(spool: &Path) -> io::Result<Vec<Summary>> {
    let mut reader = SpoolReader::open(spool)?;
    let mut tracks: Vec<Summary> = Vec::new();
    while let Some(record) = reader.next_record()? {
        match record {
            Record::Track(meta) => {
                if tracks.iter().all(|t| t.meta.key != meta.key) {
                    tracks.push(Summary {
                        codec: Codec::from_mime(&meta.codec),
                        meta,
                        frames: 0,
                        start: Duration::ZERO,
                        end: Duration::ZERO,
                        size: None,
                        number: None,
                    });
                }
            }
            Record::Frame {
                track,
                at,
                offset,
                len,
                ..
            } => {
                let Some(t) = tracks.iter_mut().find(|t| t.meta.key == track) else {
                    continue;
                };
                if t.frames == 0 {
                    t.start = at;
                    if t.meta.kind == TrackKind::Video {
                        let head = reader.frame(offset, len.min(64))?;
                        t.size = match t.codec {
                            Some(Codec::Vp8) => vp8_keyframe_size(&head),
                            Some(Codec::Vp9) => vp9_keyframe_size(&head),
                            _ => None,
                        };
                    }
                }
                t.frames += 1;
                t.end = t.end.max(at);
            }
        }
    }
    Ok(tracks)
}

/// An Opus track's CodecPrivate: the identification header of RFC 7845 §5.1.
/// Two channels at 48 kHz, as WebRTC negotiates Opus; no pre-skip, since the
/// recording joins streams already running, whose encoder delay is long past.
fn opus_head() -> [u8; 19] {
    let mut head = [0; 19];
    head[..8].copy_from_slice(b"OpusHead");
    head[8] = 1; // version
    head[9] = 2; // channels
    // pre-skip (u16) 0
    head[12..16].copy_from_slice(&48_000u32.to_le_bytes());
    // output gain (i16) 0, channel mapping family 0
    head
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
