//! [`Recorder`]: the part of a recording that lives in the room. RTP packets of the
//! tracks the room forwards go in; whole frames, stamped on the recording's clock,
//! go out to the writer's bounded queue. Sans-IO like the room: it never blocks,
//! and reads no clock but the `now` it is given.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp::codec::opus::OpusPacket;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::codec::vp9::Vp9Packet;
use rtc::rtp::packetizer::Depacketizer;

use super::writer::Sink;
use super::{Codec, Entry, Frame, StopReason, TrackKind, TrackMeta};

/// Packets a track's reorder buffer holds at most: at 1200 bytes each, 150 KB, more
/// than a keyframe of a 720p camera.
const REORDER_PACKETS: u64 = 128;
/// How long a gap in a track's sequence numbers is waited on before the packets in
/// it are given up as lost. Retransmissions the server asked for (NACK) arrive
/// within a round trip and the NACK interval; a recording, unlike a call, can
/// afford to wait for them.
const REORDER_WAIT: Duration = Duration::from_millis(250);

/// A room's recording in progress.
#[derive(Debug)]
pub(crate) struct Recorder {
    id: String,
    /// The recording's clock starts here.
    started: Instant,
    /// It stops with [`StopReason::Limit`] here.
    deadline: Instant,
    sink: Sink,
    /// By the room's track key.
    tracks: HashMap<u32, TrackRec>,
}

#[derive(Debug)]
enum TrackRec {
    /// A codec WebM cannot hold (H.264): not recorded.
    Ignored,
    Recording(Box<Assembler>),
}

impl Recorder {
    pub(crate) fn new(now: Instant, id: String, max_duration: Duration, sink: Sink) -> Self {
        Self {
            id,
            started: now,
            deadline: now + max_duration,
            sink,
            tracks: HashMap::new(),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// When it reaches its duration limit.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Records `packet` of track `key`, which `meta` describes (asked for on the
    /// track's first packet). Returns whether the track needs a keyframe: it is new,
    /// or lost a packet, and waits for one.
    pub(crate) fn packet(
        &mut self,
        now: Instant,
        key: u32,
        meta: impl FnOnce() -> TrackMeta,
        packet: &rtc::rtp::Packet,
    ) -> bool {
        let started = self.started;
        let rec = self.tracks.entry(key).or_insert_with(|| {
            let meta = meta();
            match Codec::from_mime(&meta.codec) {
                Some(codec) => TrackRec::Recording(Box::new(Assembler::new(codec, started, meta))),
                None => {
                    tracing::info!(peer = %meta.peer, codec = %meta.codec, "a track is not recorded: WebM cannot hold its codec");
                    TrackRec::Ignored
                }
            }
        });
        let TrackRec::Recording(track) = rec else {
            return false;
        };
        if let Some(meta) = &track.unregistered {
            // The writer must know a track before its frames: a full queue has it
            // tried again with the next packet.
            if self
                .sink
                .frames
                .try_send(Entry::Track(meta.clone()))
                .is_err()
            {
                return false;
            }
            track.unregistered = None;
        }
        let h = &packet.header;
        track.push(
            now,
            h.sequence_number,
            h.timestamp,
            h.marker,
            &packet.payload,
        );
        send(&self.sink, track);
        std::mem::take(&mut track.wants_keyframe)
    }

    /// Track `key` ended (its publisher left): what its buffer holds in order is
    /// recorded, and a later track starts afresh.
    pub(crate) fn end_track(&mut self, key: u32) {
        if let Some(TrackRec::Recording(mut track)) = self.tracks.remove(&key) {
            track.flush();
            send(&self.sink, &mut track);
        }
    }

    /// Ends the recording with `reason`: what the buffers hold in order is recorded,
    /// the writer learns why, and the queue closes, which tells it to finish.
    pub(crate) fn stop(mut self, reason: StopReason) {
        for (_, rec) in self.tracks.drain() {
            if let TrackRec::Recording(mut track) = rec {
                track.flush();
                send(&self.sink, &mut track);
            }
        }
        self.sink.stop(reason);
    }
}

/// Queues the frames `track` completed. A full queue drops a frame and counts it;
/// a video track then waits for a keyframe, as after a lost packet.
fn send(sink: &Sink, track: &mut Assembler) {
    let mut dropped = false;
    for frame in track.ready.drain(..) {
        if sink.frames.try_send(Entry::Frame(frame)).is_err() {
            sink.dropped.fetch_add(1, Ordering::Relaxed);
            dropped = true;
        }
    }
    if dropped {
        track.lost();
    }
}

/// A packet waiting in a reorder buffer.
#[derive(Debug)]
struct Pkt {
    seq: u64,
    arrived: Instant,
    timestamp: u32,
    marker: bool,
    payload: Bytes,
}

/// A frame being put together from its packets.
#[derive(Debug)]
struct Partial {
    /// When its first packet arrived.
    arrived: Instant,
    timestamp: u32,
    keyframe: bool,
    /// Its first packet's data, and the rest once there is more: a frame of one
    /// packet (audio, small video frames) is not copied.
    first: Bytes,
    rest: Vec<u8>,
}

impl Partial {
    fn append(&mut self, data: &Bytes) {
        if self.rest.is_empty() {
            self.rest.reserve(self.first.len() * 4);
            self.rest.extend_from_slice(&self.first);
        }
        self.rest.extend_from_slice(data);
    }

    fn data(self) -> Bytes {
        if self.rest.is_empty() {
            self.first
        } else {
            self.rest.into()
        }
    }
}

/// One track's reorder buffer and frame assembler.
#[derive(Debug)]
pub(super) struct Assembler {
    codec: Codec,
    kind: TrackKind,
    track: u32,
    clock_rate: u64,
    started: Instant,
    /// The track's description, until the writer has it.
    unregistered: Option<TrackMeta>,
    /// Sequence numbers, unwrapped: the highest seen, as 16 and 64 bits.
    highest: Option<(u16, u64)>,
    /// The next sequence number to assemble; every one before it was assembled or
    /// given up.
    next: Option<u64>,
    /// Packets ahead of `next`, at `seq % REORDER_PACKETS`.
    slots: Vec<Option<Pkt>>,
    buffered: usize,
    /// A video track after a gap: nothing is recorded until a keyframe starts.
    waiting_for_keyframe: bool,
    /// It has asked (since the room last looked) for a keyframe.
    wants_keyframe: bool,
    partial: Option<Partial>,
    /// RTP timestamps, unwrapped: the latest as 32 and 64 bits.
    latest_timestamp: Option<(u32, i64)>,
    /// The first frame's unwrapped RTP timestamp, and where it sits on the
    /// recording's clock.
    anchor: Option<(i64, Duration)>,
    /// The last frame's time: no frame goes before it.
    last_at: Duration,
    /// Frames completed and not yet queued.
    ready: Vec<Frame>,
}

/// What a video packet's payload descriptor says.
struct Part {
    /// It begins a frame.
    start: bool,
    /// It ends one (besides the marker bit).
    end: bool,
    /// The frame it begins is a keyframe.
    keyframe: bool,
    data: Bytes,
}

impl Assembler {
    pub(super) fn new(codec: Codec, started: Instant, meta: TrackMeta) -> Self {
        let video = meta.kind == TrackKind::Video;
        Self {
            codec,
            kind: meta.kind,
            track: meta.key,
            clock_rate: u64::from(meta.clock_rate.max(1)),
            started,
            unregistered: Some(meta),
            highest: None,
            next: None,
            slots: (0..REORDER_PACKETS).map(|_| None).collect(),
            buffered: 0,
            waiting_for_keyframe: video,
            wants_keyframe: video,
            partial: None,
            latest_timestamp: None,
            anchor: None,
            last_at: Duration::ZERO,
            ready: Vec::new(),
        }
    }

    fn unwrap_seq(&mut self, seq: u16) -> u64 {
        let Some((last, unwrapped)) = self.highest else {
            // Far from zero, so that packets reordered before the first stay positive.
            let start = 1 << 32 | u64::from(seq);
            self.highest = Some((seq, start));
            return start;
        };
        let delta = i64::from(seq.wrapping_sub(last) as i16);
        let seq64 = unwrapped.saturating_add_signed(delta);
        if delta > 0 {
            self.highest = Some((seq, seq64));
        }
        seq64
    }

    /// Takes one packet, arrived at `now`.
    pub(super) fn push(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &Bytes,
    ) {
        let seq = self.unwrap_seq(seq);
        let next = *self.next.get_or_insert(seq);
        if seq < next {
            // A duplicate, or too late: its gap was given up.
            return;
        }
        let packet = Pkt {
            seq,
            arrived: now,
            timestamp,
            marker,
            payload: payload.clone(),
        };
        if seq == next && self.buffered == 0 {
            self.next = Some(seq + 1);
            self.assemble(packet);
            return;
        }
        if seq >= next + REORDER_PACKETS {
            // Too far ahead to wait for what is missing: what does not fit in the
            // buffer beside it is given up.
            while self.buffered > 0 && self.next.is_some_and(|n| seq >= n + REORDER_PACKETS) {
                self.step();
            }
            if self.next.is_some_and(|n| seq >= n + REORDER_PACKETS) {
                self.lost();
                self.next = Some(seq + 1 - REORDER_PACKETS);
            }
        }
        let slot = &mut self.slots[(seq % REORDER_PACKETS) as usize];
        if slot.is_none() {
            self.buffered += 1;
            *slot = Some(packet);
        }
        self.drain();
        self.skip_gaps(now);
    }

    /// Assembles the packet at `next` if it is here, or gives it up; moves on by one.
    fn step(&mut self) {
        let Some(next) = self.next else { return };
        let slot = &mut self.slots[(next % REORDER_PACKETS) as usize];
        match slot.take_if(|p| p.seq == next) {
            Some(packet) => {
                self.buffered -= 1;
                self.assemble(packet);
            }
            None => self.lost(),
        }
        self.next = Some(next + 1);
    }

    /// Assembles the packets that follow on from `next` without a gap.
    fn drain(&mut self) {
        while self.next_is_here() {
            self.step();
        }
    }

    /// Whether the packet at `next` is buffered.
    fn next_is_here(&self) -> bool {
        self.next.is_some_and(|next| {
            self.slots[(next % REORDER_PACKETS) as usize]
                .as_ref()
                .is_some_and(|p| p.seq == next)
        })
    }

    /// Gives up the packets missing at `next` once the packet after them has
    /// waited [`REORDER_WAIT`], and assembles what follows; again for each gap.
    fn skip_gaps(&mut self, now: Instant) {
        while self.buffered > 0
            && let Some(next) = self.next
        {
            let waited = (next..next + REORDER_PACKETS)
                .find_map(|seq| {
                    self.slots[(seq % REORDER_PACKETS) as usize]
                        .as_ref()
                        .filter(|p| p.seq == seq)
                })
                .is_some_and(|p| now.saturating_duration_since(p.arrived) >= REORDER_WAIT);
            if !waited {
                return;
            }
            // A packet is buffered ahead: this stops there.
            while !self.next_is_here() {
                self.step();
            }
            self.drain();
        }
    }

    /// Assembles everything buffered, giving up what is missing: the track ended.
    /// A frame left incomplete is dropped.
    pub(super) fn flush(&mut self) {
        while self.buffered > 0 {
            self.step();
        }
        self.partial = None;
    }

    /// A packet of this track was lost, or a frame dropped: the frame being
    /// assembled cannot be completed, and a video track cannot be decoded again
    /// before its next keyframe.
    fn lost(&mut self) {
        self.partial = None;
        if self.kind == TrackKind::Video {
            self.waiting_for_keyframe = true;
            self.wants_keyframe = true;
        }
    }

    fn assemble(&mut self, packet: Pkt) {
        if packet.payload.is_empty() {
            // Padding only (a sender probing bandwidth): it takes a sequence number
            // but carries no media, and loses nothing.
            return;
        }
        let part = match self.codec {
            Codec::Opus => {
                let Ok(data) = OpusPacket.depacketize(&packet.payload) else {
                    return;
                };
                if !data.is_empty() {
                    self.complete(packet.arrived, packet.timestamp, true, data);
                }
                return;
            }
            Codec::Vp8 => vp8(&packet.payload),
            Codec::Vp9 => vp9(&packet.payload),
        };
        let Some(part) = part else {
            // Malformed: as good as lost.
            self.lost();
            return;
        };
        if part.start {
            if let Some(previous) = self.partial.take()
                && previous.timestamp != packet.timestamp
            {
                // No packet was missing before this one, so the previous frame is
                // whole, though its sender did not mark its end.
                let (arrived, timestamp, keyframe) =
                    (previous.arrived, previous.timestamp, previous.keyframe);
                self.complete(arrived, timestamp, keyframe, previous.data());
            }
            if self.waiting_for_keyframe && !part.keyframe {
                // Ask again: an earlier request may have been answered before the
                // gap, or been lost.
                self.wants_keyframe = true;
                return;
            }
            self.waiting_for_keyframe = false;
            self.partial = Some(Partial {
                arrived: packet.arrived,
                timestamp: packet.timestamp,
                keyframe: part.keyframe,
                first: part.data,
                rest: Vec::new(),
            });
        } else {
            match &mut self.partial {
                Some(frame) if frame.timestamp == packet.timestamp => frame.append(&part.data),
                // A frame that changed its timestamp midway is not one frame.
                Some(_) => {
                    self.lost();
                    return;
                }
                // The middle of a frame whose start was not recorded.
                None => return,
            }
        }
        if (packet.marker || part.end)
            && let Some(frame) = self.partial.take()
        {
            let (arrived, timestamp, keyframe) = (frame.arrived, frame.timestamp, frame.keyframe);
            self.complete(arrived, timestamp, keyframe, frame.data());
        }
    }

    /// A whole frame with RTP timestamp `timestamp`, whose first packet arrived at
    /// `arrived`: stamped on the recording's clock and made ready to queue.
    fn complete(&mut self, arrived: Instant, timestamp: u32, keyframe: bool, data: Bytes) {
        let unwrapped = match self.latest_timestamp {
            None => i64::from(timestamp),
            Some((last, unwrapped)) => unwrapped + i64::from(timestamp.wrapping_sub(last) as i32),
        };
        self.latest_timestamp = Some((timestamp, unwrapped));
        let (first, offset) = *self
            .anchor
            .get_or_insert((unwrapped, arrived.saturating_duration_since(self.started)));
        let ticks = u64::try_from(unwrapped - first).unwrap_or(0);
        let since_first = Duration::from_nanos(
            u64::try_from(u128::from(ticks) * 1_000_000_000 / u128::from(self.clock_rate))
                .unwrap_or(u64::MAX),
        );
        let at = (offset + since_first).max(self.last_at);
        self.last_at = at;
        self.ready.push(Frame {
            track: self.track,
            at,
            keyframe,
            data,
        });
    }

    #[cfg(test)]
    pub(super) fn take_ready(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.ready)
    }

    #[cfg(test)]
    pub(super) fn take_wants_keyframe(&mut self) -> bool {
        std::mem::take(&mut self.wants_keyframe)
    }
}

/// A VP8 packet's payload (RFC 7741): a frame starts at partition 0's start; its
/// first byte's P bit is clear for a keyframe.
fn vp8(payload: &Bytes) -> Option<Part> {
    // A fresh descriptor each time: `Vp8Packet` keeps optional fields from the last
    // packet it parsed.
    let mut descriptor = Vp8Packet::default();
    let data = descriptor.depacketize(payload).ok()?;
    let start = descriptor.s == 1 && descriptor.pid == 0;
    Some(Part {
        start,
        end: false,
        keyframe: start && data.first().is_some_and(|b| b & 0x01 == 0),
        data,
    })
}

/// A VP9 packet's payload (RFC 9628's descriptor): B and E begin and end a frame.
/// Only the base spatial layer is recorded (WebM holds one frame per block, and
/// browsers send one layer unless asked for SVC); a keyframe is a frame of its, not
/// inter-predicted, whose uncompressed header says so.
fn vp9(payload: &Bytes) -> Option<Part> {
    let mut descriptor = Vp9Packet::default();
    let data = descriptor.depacketize(payload).ok()?;
    if descriptor.l && descriptor.sid > 0 {
        return Some(Part {
            start: false,
            end: false,
            keyframe: false,
            data: Bytes::new(),
        });
    }
    let start = descriptor.b;
    Some(Part {
        start,
        end: descriptor.e,
        keyframe: start && !descriptor.p && vp9_keyframe_size(&data).is_some(),
        data,
    })
}

/// The width and height of a VP8 keyframe (RFC 6386 §9.1), `None` for any other
/// frame.
pub(super) fn vp8_keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    if frame.len() < 10 || frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u32::from(u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff);
    (width > 0 && height > 0).then_some((width, height))
}

/// The width and height of a VP9 keyframe, from its uncompressed header (VP9
/// bitstream specification §6.2); `None` for any other frame.
pub(super) fn vp9_keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    let mut bits = Bits { data: frame, at: 0 };
    if bits.read(2)? != 2 {
        return None;
    }
    let profile = bits.read(1)? | bits.read(1)? << 1;
    if profile == 3 {
        bits.read(1)?;
    }
    // show_existing_frame, then frame_type: 0 for a keyframe.
    if bits.read(1)? == 1 || bits.read(1)? != 0 {
        return None;
    }
    bits.read(2)?; // show_frame, error_resilient_mode
    if bits.read(24)? != 0x49_83_42 {
        return None;
    }
    if profile >= 2 {
        bits.read(1)?; // ten_or_twelve_bit
    }
    let color_space = bits.read(3)?;
    if color_space != 7 {
        bits.read(1)?; // color_range
        if profile == 1 || profile == 3 {
            bits.read(3)?; // subsampling_x, subsampling_y, reserved_zero
        }
    } else if profile == 1 || profile == 3 {
        bits.read(1)?; // reserved_zero
    }
    let width = bits.read(16)? + 1;
    let height = bits.read(16)? + 1;
    Some((width, height))
}

/// Reads a byte string most significant bit first.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut value = 0;
        for _ in 0..n {
            let byte = self.data.get(self.at / 8)?;
            value = value << 1 | u32::from(byte >> (7 - self.at % 8) & 1);
            self.at += 1;
        }
        Some(value)
    }
}
