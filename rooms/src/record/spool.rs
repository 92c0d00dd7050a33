//! The spool: a recording's frames as they arrive, appended to a file that the
//! WebM is written from when the recording stops. A crash leaves it readable up to
//! its last whole record, which [`super::recover`] turns into a playable file.
//!
//! The format: the 8 bytes [`MAGIC`], then records, each a kind byte, the length of
//! its body (u32, little-endian) and the body. All integers are little-endian.
//! - kind 1, a track: key u32, kind u8 (0 audio, 1 video), source u8 (0 microphone,
//!   1 camera, 2 screen, 3 screen audio), clock rate u32, then the peer id and the
//!   codec's MIME type, each a u16 length and UTF-8.
//! - kind 2, a frame: track key u32, time on the recording's clock in ns u64, flags
//!   u8 (bit 0: keyframe), then the frame.
//!
//! A reader stops at the first record that is cut short or unknown: the tail a
//! crash left half written.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use super::{Entry, TrackKind, TrackMeta};
use crate::{PeerId, Source};

pub(super) const MAGIC: &[u8; 8] = b"HUDSPL01";
const TRACK: u8 = 1;
const FRAME: u8 = 2;
/// Bytes before a record's body.
const RECORD_HEADER: u64 = 5;
/// Bytes of a frame record's body before the frame.
const FRAME_HEADER: u64 = 13;

const SOURCES: [Source; 4] = [
    Source::Microphone,
    Source::Camera,
    Source::Screen,
    Source::ScreenAudio,
];

/// Appends to a spool.
#[derive(Debug)]
pub(super) struct SpoolWriter {
    out: BufWriter<File>,
    /// Bytes in the file, once flushed.
    size: u64,
    /// A record being encoded, kept to spare an allocation per frame.
    record: Vec<u8>,
}

impl SpoolWriter {
    /// Creates the spool at `path` (and its directory), written to disk before this
    /// returns: a recording that cannot create it does not start.
    pub(super) fn create(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = File::create(path)?;
        file.write_all(MAGIC)?;
        file.flush()?;
        Ok(Self {
            out: BufWriter::with_capacity(64 << 10, file),
            size: MAGIC.len() as u64,
            record: Vec::new(),
        })
    }

    /// A spool writing to `file` as it is (no magic written): for tests that need
    /// a file that fails, such as `/dev/full`.
    #[cfg(test)]
    pub(super) fn on(file: File) -> Self {
        Self {
            out: BufWriter::with_capacity(64 << 10, file),
            size: 0,
            record: Vec::new(),
        }
    }

    /// Bytes the spool holds, counting what is still buffered.
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    pub(super) fn append(&mut self, entry: &Entry) -> io::Result<()> {
        let record = &mut self.record;
        record.clear();
        match entry {
            Entry::Track(meta) => {
                record.push(TRACK);
                record.extend_from_slice(&[0; 4]);
                record.extend_from_slice(&meta.key.to_le_bytes());
                record.push(match meta.kind {
                    TrackKind::Audio => 0,
                    TrackKind::Video => 1,
                });
                record.push(SOURCES.iter().position(|s| *s == meta.source).unwrap_or(0) as u8);
                record.extend_from_slice(&meta.clock_rate.to_le_bytes());
                for text in [&meta.peer.0, &meta.codec] {
                    let bytes = &text.as_bytes()[..text.len().min(usize::from(u16::MAX))];
                    record.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
                    record.extend_from_slice(bytes);
                }
            }
            Entry::Frame(frame) => {
                record.push(FRAME);
                record.extend_from_slice(&[0; 4]);
                record.extend_from_slice(&frame.track.to_le_bytes());
                let at = u64::try_from(frame.at.as_nanos()).unwrap_or(u64::MAX);
                record.extend_from_slice(&at.to_le_bytes());
                record.push(u8::from(frame.keyframe));
                record.extend_from_slice(&frame.data);
            }
        }
        let body = u32::try_from(record.len() as u64 - RECORD_HEADER)
            .map_err(|_| io::Error::other("a frame too large to record"))?;
        record[1..5].copy_from_slice(&body.to_le_bytes());
        self.out.write_all(record)?;
        self.size += record.len() as u64;
        Ok(())
    }

    /// Hands what is buffered to the OS: from there a crash of the process does
    /// not lose it.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and syncs the spool, before the WebM is written from it.
    pub(super) fn finish(mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }
}

/// A record read back: a frame's data stays in the file, at `offset`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Record {
    Track(TrackMeta),
    Frame {
        track: u32,
        at: Duration,
        keyframe: bool,
        offset: u64,
        len: u32,
    },
}

/// Reads a spool's records in order, up to the first one cut short.
#[derive(Debug)]
pub(super) struct SpoolReader {
    input: BufReader<File>,
    /// Where the next record starts.
    at: u64,
    /// The file's size when opened.
    size: u64,
}

impl SpoolReader {
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        let mut input = BufReader::with_capacity(64 << 10, file);
        let mut magic = [0; 8];
        input.read_exact(&mut magic)?;
        if magic != *MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a recording spool",
            ));
        }
        Ok(Self {
            input,
            at: MAGIC.len() as u64,
            size,
        })
    }

    /// Reads frame data (from [`Record::Frame`]).
    pub(super) fn frame(&self, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        let mut data = vec![0; len as usize];
        self.input.get_ref().read_exact_at(&mut data, offset)?;
        Ok(data)
    }

    /// The next record; `None` at the end, or at a record cut short or unknown.
    pub(super) fn next_record(&mut self) -> io::Result<Option<Record>> {
        if self.at + RECORD_HEADER > self.size {
            return Ok(None);
        }
        let mut header = [0; RECORD_HEADER as usize];
        self.input.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
        let body_at = self.at + RECORD_HEADER;
        if body_at + u64::from(len) > self.size {
            return Ok(None);
        }
        self.at = body_at + u64::from(len);
        let record = match header[0] {
            TRACK => {
                let mut body = vec![0; len as usize];
                self.input.read_exact(&mut body)?;
                let Some(meta) = parse_track(&body) else {
                    return Ok(None);
                };
                Record::Track(meta)
            }
            FRAME if u64::from(len) >= FRAME_HEADER => {
                let mut body = [0; FRAME_HEADER as usize];
                self.input.read_exact(&mut body)?;
                self.input
                    .seek_relative(i64::from(len) - FRAME_HEADER as i64)?;
                Record::Frame {
                    track: u32::from_le_bytes(body[0..4].try_into().unwrap_or_default()),
                    at: Duration::from_nanos(u64::from_le_bytes(
                        body[4..12].try_into().unwrap_or_default(),
                    )),
                    keyframe: body[12] & 1 == 1,
                    offset: body_at + FRAME_HEADER,
                    len: len - FRAME_HEADER as u32,
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(record))
    }
}

fn parse_track(body: &[u8]) -> Option<TrackMeta> {
    let mut rest = body;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    let key = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let kind = match take(1)?[0] {
        0 => TrackKind::Audio,
        1 => TrackKind::Video,
        _ => return None,
    };
    let source = *SOURCES.get(usize::from(take(1)?[0]))?;
    let clock_rate = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let mut text = || -> Option<String> {
        let len = u16::from_le_bytes(take(2)?.try_into().ok()?);
        String::from_utf8(take(usize::from(len))?.to_vec()).ok()
    };
    let peer = PeerId(text()?);
    let codec = text()?;
    Some(TrackMeta {
        key,
        peer,
        kind,
        source,
        codec,
        clock_rate,
    })
}

/// A frame as [`SpoolReader`] gives it back with its data, for tests.
#[cfg(test)]
pub(super) fn read_all(path: &Path) -> io::Result<Vec<Entry>> {
    let mut reader = SpoolReader::open(path)?;
    let mut entries = Vec::new();
    while let Some(record) = reader.next_record()? {
        entries.push(match record {
            Record::Track(meta) => Entry::Track(meta),
            Record::Frame {
                track,
                at,
                keyframe,
                offset,
                len,
            } => Entry::Frame(super::Frame {
                track,
                at,
                keyframe,
                data: reader.frame(offset, len)?.into(),
            }),
        });
    }
    Ok(entries)
}
