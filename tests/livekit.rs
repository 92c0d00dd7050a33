//! Runs the LiveKit suite (`tests/livekit`: Node's test runner with LiveKit's own
//! `livekit-server-sdk`) against the huddle binary Cargo built for this run. No
//! LiveKit server runs here: the suite answers Huddle's RoomService requests with a
//! local stand-in and checks tokens and webhooks with the SDK. Node and npm are
//! required.

mod node_suite;

#[test]
fn the_livekit_suite_passes_with_the_official_server_sdk() {
    // The suite starts huddle with the Socket.IO suite's harness, whose client
    // (`socket.io-client`) resolves from `tests/socketio/node_modules`.
    node_suite::install("socketio", &["socket.io-client"]);
    node_suite::run("livekit", &["livekit-server-sdk", "@livekit/protocol"]);
}

/// Recording orders reach LiveKit's plane only through the recording service; this
/// drives the plane directly against the Egress stand-in (run as a process by
/// `tests/livekit/stand-in-process.mjs`): what Huddle asks of Egress, and what the
/// egress webhooks make it report.
mod egress {
    use std::io::{BufRead, BufReader, Write};
    use std::path::PathBuf;
    use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::{TimeDelta, Utc};
    use huddle::calls::events::CallEvent;
    use huddle::calls::lifecycle::{CallSnapshot, Caller, Limits, MediaFlags, NewCall};
    use huddle::calls::model::{CallId, CallType, MediaMode, UserId};
    use huddle::calls::service::{CallObserver, CallService, MediaSetup};
    use huddle::clock::SystemClock;
    use huddle::media::livekit::{LiveKit, LiveKitConfig};
    use huddle::media::{MediaPlane, RecordingOrder, RecordingReport};
    use huddle::metrics::Metrics;
    use huddle::store::Store;
    use rooms::record::{RecordingEvent, RecordingSpec, StopReason};
    use serde_json::Value;
    use tokio::sync::mpsc;

    use super::node_suite;

    const API_KEY: &str = "APIhuddleTest";
    const API_SECRET: &str = "livekit-test-secret-0123456789abcdef";

    /// The stand-in's process; killed when dropped.
    struct StandIn {
        child: Child,
        input: ChildStdin,
        output: BufReader<ChildStdout>,
        url: String,
    }

    impl StandIn {
        fn start() -> StandIn {
            node_suite::install("livekit", &["livekit-server-sdk", "@livekit/protocol"]);
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/livekit");
            let mut child = Command::new("node")
                .arg("stand-in-process.mjs")
                .current_dir(dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("node is required for the Egress stand-in: {e}"));
            let input = child.stdin.take().unwrap();
            let output = BufReader::new(child.stdout.take().unwrap());
            let mut stand_in = StandIn {
                child,
                input,
                output,
                url: String::new(),
            };
            stand_in.url = stand_in.line()["url"].as_str().unwrap().to_owned();
            stand_in
        }

        fn line(&mut self) -> Value {
            let mut line = String::new();
            self.output.read_line(&mut line).unwrap();
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("stand-in said {line:?}: {e}"))
        }

        fn ask(&mut self, command: &str) -> Value {
            writeln!(self.input, "{command}").unwrap();
            self.line()
        }

        /// The Egress requests it was sent, in order.
        fn egress_requests(&mut self) -> Vec<Value> {
            let requests = self.ask("requests");
            let requests = requests.as_array().unwrap().iter();
            requests
                .filter(|r| r["service"] == "Egress")
                .cloned()
                .collect()
        }
    }

    impl Drop for StandIn {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[derive(Debug)]
    struct Unobserved;

    impl CallObserver for Unobserved {
        fn call_changed(&self, _: &CallSnapshot, _: &[CallEvent]) {}
        fn presence_changed(&self, _: &UserId, _: bool) {}
    }

    async fn service() -> CallService {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        CallService::new(
            store,
            Arc::new(SystemClock),
            limits(),
            Arc::new(Metrics::default()),
            Arc::new(Unobserved),
            MediaSetup {
                default_mode: MediaMode::Livekit,
                room_host: None,
            },
        )
    }

    fn limits() -> Limits {
        Limits {
            max_participants: 8,
            ringing_timeout: TimeDelta::seconds(30),
            max_duration: TimeDelta::hours(1),
            away_grace: TimeDelta::seconds(30),
            max_ringing: 3,
            decline_cooldown: TimeDelta::seconds(60),
        }
    }

    fn livekit_call(call_type: CallType) -> CallSnapshot {
        let alice = Caller {
            id: UserId("alice".into()),
            name: None,
        };
        let request = NewCall {
            call_type,
            invitees: vec![UserId("bob".into())],
            chat_id: None,
            media: MediaFlags {
                audio: true,
                video: call_type == CallType::Video,
            },
            media_mode: MediaMode::Livekit,
        };
        CallSnapshot::start(CallId::random(), &alice, request, &limits(), Utc::now()).unwrap()
    }

    fn spec(id: &str) -> RecordingSpec {
        RecordingSpec {
            id: id.to_owned(),
            path: PathBuf::from(format!("/unused/{id}.webm")),
            max_bytes: 1 << 30,
            max_duration: Duration::from_secs(3600),
        }
    }

    async fn next(reports: &mut mpsc::UnboundedReceiver<RecordingReport>) -> RecordingReport {
        tokio::time::timeout(Duration::from_secs(5), reports.recv())
            .await
            .expect("a recording report within 5 s")
            .expect("the reports channel is open")
    }

    #[tokio::test]
    async fn egress_records_livekit_calls_to_files_named_after_the_recording() {
        let mut stand_in = StandIn::start();
        let (sender, mut reports) = mpsc::unbounded_channel();
        let livekit = LiveKit::new(
            LiveKitConfig {
                url: stand_in.url.clone(),
                api_key: API_KEY.into(),
                api_secret: API_SECRET.into(),
                token_ttl: Duration::from_secs(600),
                empty_timeout: 60,
                max_participants: 8,
                request_timeout: Duration::from_secs(5),
            },
            sender,
        );
        let service = service().await;

        // Start: a room composite egress of the call's room to <call>/<recording>.mp4.
        let call = livekit_call(CallType::Video);
        let (id, room) = (call.call.id, call.call.room_id.clone());
        livekit
            .recording(&call, RecordingOrder::Start(spec("rec-video")))
            .await
            .unwrap();
        let requests = stand_in.egress_requests();
        assert_eq!(requests.len(), 1, "{requests:#?}");
        let start = &requests[0];
        assert_eq!(start["method"], "StartRoomCompositeEgress");
        assert_eq!(start["authError"], Value::Null, "{start:#?}");
        assert_eq!(start["claims"]["video"]["roomRecord"], true);
        assert_eq!(start["body"]["roomName"], room.as_str());
        let output = &start["body"]["fileOutputs"][0];
        assert_eq!(output["filepath"], format!("{id}/rec-video.mp4"));
        assert_eq!(output["fileType"], "MP4");
        assert_ne!(start["body"]["audioOnly"], true);

        // Stop: the room's running egresses are listed, that one is stopped.
        livekit
            .recording(
                &call,
                RecordingOrder::Stop {
                    id: "rec-video".into(),
                },
            )
            .await
            .unwrap();
        let requests = stand_in.egress_requests();
        let methods: Vec<&str> = requests
            .iter()
            .map(|r| r["method"].as_str().unwrap())
            .collect();
        assert_eq!(
            methods,
            ["StartRoomCompositeEgress", "ListEgress", "StopEgress"]
        );
        assert_eq!(requests[1]["body"]["roomName"], room.as_str());
        assert_eq!(requests[1]["body"]["active"], true);
        assert_eq!(requests[2]["body"]["egressId"], "EG_000001");
        let stopped = next(&mut reports).await;
        assert_eq!((stopped.call, stopped.id.as_str()), (id, "rec-video"));
        assert_eq!(
            stopped.event,
            RecordingEvent::Stopped {
                reason: StopReason::Asked
            }
        );
        // Stopping again finds nothing running: nothing is asked or reported.
        livekit
            .recording(
                &call,
                RecordingOrder::Stop {
                    id: "rec-video".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            stand_in.egress_requests().len(),
            4,
            "one more ListEgress only"
        );

        // egress_ended (signed) → the file as LiveKit reports it, without a second Stopped.
        let ended = stand_in.ask("end EG_000001");
        let (body, authorization) = (
            ended["body"].as_str().unwrap(),
            ended["authorization"].as_str().unwrap(),
        );
        livekit
            .webhook(&service, body, &format!("Bearer {authorization}"))
            .await
            .unwrap();
        let completed = next(&mut reports).await;
        assert_eq!((completed.call, completed.id.as_str()), (id, "rec-video"));
        let RecordingEvent::Completed(result) = completed.event else {
            panic!("{:?}", completed.event)
        };
        assert_eq!(
            result.path,
            PathBuf::from(format!("s3://recordings/{id}/rec-video.mp4"))
        );
        assert_eq!(result.size, 123_456);
        assert_eq!(result.duration, Duration::from_millis(6200));
        assert!(result.tracks.is_empty());
        // The same webhook signed with another secret is refused and reports nothing.
        assert!(
            livekit
                .webhook(&service, body, "Bearer not-a-token")
                .await
                .is_err()
        );
        let tampered = body.replace("123456", "654321");
        assert!(
            livekit
                .webhook(&service, &tampered, authorization)
                .await
                .is_err()
        );

        // An audio call records its audio to OGG; its egress ending by itself (the room
        // closed with the call) reports Stopped (call ended), then the file.
        let call = livekit_call(CallType::Audio);
        let id = call.call.id;
        livekit
            .recording(&call, RecordingOrder::Start(spec("rec-audio")))
            .await
            .unwrap();
        let requests = stand_in.egress_requests();
        let start = requests.last().unwrap();
        assert_eq!(start["body"]["audioOnly"], true);
        assert_eq!(
            start["body"]["fileOutputs"][0]["filepath"],
            format!("{id}/rec-audio.ogg")
        );
        assert_eq!(start["body"]["fileOutputs"][0]["fileType"], "OGG");
        let ended = stand_in.ask("end EG_000002");
        let (body, authorization) = (
            ended["body"].as_str().unwrap(),
            ended["authorization"].as_str().unwrap(),
        );
        livekit
            .webhook(&service, body, authorization)
            .await
            .unwrap();
        let stopped = next(&mut reports).await;
        assert_eq!((stopped.call, stopped.id.as_str()), (id, "rec-audio"));
        assert_eq!(
            stopped.event,
            RecordingEvent::Stopped {
                reason: StopReason::CallEnded
            }
        );
        assert!(matches!(
            next(&mut reports).await.event,
            RecordingEvent::Completed(_)
        ));
        assert!(reports.try_recv().is_err(), "nothing else was reported");
    }
}
