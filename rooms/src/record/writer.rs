//! The writer: a thread of its own per recording (from the runtime's blocking
//! pool: a slow disk must not stall an async worker, and the rooms on it), which
//! appends what the room queues to the spool, and writes the WebM when the
//! recording stops. It reports the recording's `Stopped`, then `Completed` or
//! `Failed`, itself, in that order.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use super::mux::write_webm;
use super::spool::SpoolWriter;
use super::{Entry, RecordingEvent, RecordingSpec, StopReason, spool_path};
use crate::{RoomId, SfuEvent};

/// Frames queued for the writer at most: well over a second of a full room (eight
/// participants' audio and video, some 650 frames a second). When the disk cannot
/// keep up, more are dropped (and counted), never waited for.
pub(crate) const QUEUE: usize = 1024;
/// How often the writer empties the queue. It is not woken for each frame: that
/// would cost the room's thread a system call per frame. A full queue every
/// 20 ms is 50 000 frames a second, far beyond a room's.
const POLL: Duration = Duration::from_millis(20);

/// The room's end of a recording: frames go in, and the reason it stopped.
#[derive(Debug)]
pub(crate) struct Sink {
    pub(super) frames: mpsc::Sender<Entry>,
    stop: oneshot::Sender<StopReason>,
    /// Frames dropped because the queue was full.
    pub(super) dropped: Arc<AtomicU64>,
}

impl Sink {
    /// Tells the writer why the recording stopped; dropping the sink then closes
    /// the queue, and the writer finishes once it has written what was queued.
    pub(super) fn stop(self, reason: StopReason) {
        let _ = self.stop.send(reason);
    }
}

/// The writer's end.
#[derive(Debug)]
pub(crate) struct Feed {
    pub(crate) frames: mpsc::Receiver<Entry>,
    pub(crate) stop: oneshot::Receiver<StopReason>,
    pub(crate) dropped: Arc<AtomicU64>,
}

/// A sink and the feed it queues to, `capacity` frames deep.
pub(crate) fn channel(capacity: usize) -> (Sink, Feed) {
    let (frames, frames_rx) = mpsc::channel(capacity);
    let (stop, stop_rx) = oneshot::channel();
    let dropped = Arc::new(AtomicU64::new(0));
    (
        Sink {
            frames,
            stop,
            dropped: dropped.clone(),
        },
        Feed {
            frames: frames_rx,
            stop: stop_rx,
            dropped,
        },
    )
}

/// Creates recording `spec`'s spool and starts its writer, which reports to
/// `events` as room `room`'s. A writer that cannot go on (a full disk, the size
/// limit) asks the room to stop through `ask_stop`. Fails, starting nothing, when
/// the spool cannot be created.
pub(crate) fn start(
    room: RoomId,
    spec: &RecordingSpec,
    events: mpsc::UnboundedSender<SfuEvent>,
    ask_stop: impl Fn(StopReason) + Send + 'static,
) -> io::Result<Sink> {
    let spool = SpoolWriter::create(&spool_path(&spec.path))?;
    let (sink, feed) = channel(QUEUE);
    let spec = spec.clone();
    tokio::task::spawn_blocking(move || {
        let report = |event| {
            let _ = events.send(SfuEvent::Recording {
                room: room.clone(),
                id: spec.id.clone(),
                event,
            });
        };
        run(&spec, spool, feed, ask_stop, report);
    });
    Ok(sink)
}

/// The writer's life: appends until the room closes the queue, then reports the
/// stop and writes the WebM.
pub(super) fn run(
    spec: &RecordingSpec,
    mut spool: SpoolWriter,
    mut feed: Feed,
    ask_stop: impl Fn(StopReason),
    report: impl Fn(RecordingEvent),
) {
    let mut failure: Option<io::Error> = None;
    let mut full = false;
    let fail = |e: io::Error, failure: &mut Option<io::Error>| {
        tracing::warn!(recording = %spec.id, error = %e, "writing a recording failed");
        *failure = Some(e);
        ask_stop(StopReason::Failed);
    };
    loop {
        let mut written = 0;
        let closed = loop {
            let entry = match feed.frames.try_recv() {
                Ok(entry) => entry,
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            };
            if failure.is_some() || full {
                // Asked to stop: what the room queued meanwhile is not written.
                continue;
            }
            match spool.append(&entry) {
                Err(e) => fail(e, &mut failure),
                Ok(()) => written += 1,
            }
            if spool.size() >= spec.max_bytes {
                full = true;
                ask_stop(StopReason::Limit);
            }
        };
        // Flushed each round: on disk (in the OS's hands) is what the writer was
        // given up to [`POLL`] ago.
        if written > 0
            && failure.is_none()
            && let Err(e) = spool.flush()
        {
            fail(e, &mut failure);
        }
        if closed {
            break;
        }
        std::thread::sleep(POLL);
    }
    // The room sends the reason before it closes the queue; without one, the room
    // went away.
    let reason = feed.stop.try_recv().unwrap_or(StopReason::CallEnded);
    report(RecordingEvent::Stopped { reason });
    let written = match failure {
        Some(e) => Err(e),
        None => spool
            .finish()
            .and_then(|()| write_webm(&spec.path, feed.dropped.load(Ordering::Relaxed))),
    };
    if written.is_err() {
        // Nothing is left behind for a recording that failed.
        let _ = std::fs::remove_file(spool_path(&spec.path));
    }
    report(match written {
        Ok(result) => RecordingEvent::Completed(result),
        Err(e) => RecordingEvent::Failed {
            error: e.to_string(),
        },
    });
}
