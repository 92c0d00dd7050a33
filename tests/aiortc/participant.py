"""A Huddle call participant on a second, independent WebRTC stack: aiortc (Python),
signaling over its own Socket.IO connection (python-socketio), media through the
built-in SFU the way README "Media through the built-in SFU" describes it: a publish
connection that offers synthetic audio and video to the peer "sfu", and a subscribe
connection that answers the SFU's offers and decodes every frame it receives.

It signs in with a demo token (POST /demo/token), accepts the first call it is
invited to, and reports on stdout, one JSON object a line:

  {"event": "online", "userId": ...}
  {"event": "joined", "callId": ...}
  {"event": "stats", "pub": <connectionState>, "sub": ..., "received": {mid: {...}}}

where each received mid carries {"kind", "userId", "source", "frames", ...}: "frames"
counts the frames aiortc decoded (`track.recv()`) on that mid. It runs until SIGTERM or
SIGINT, or until its standard input ends (the process that started it is gone), then
closes both connections and exits; errors go to stderr, and with AIORTC_SDP_LOG=1 every
description exchanged with the SFU too.
"""

import argparse
import asyncio
import fractions
import json
import math
import os
import signal
import sys
import time

import aiohttp
import aioice.ice
import av
import socketio
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack

SFU = "sfu"


def loopback_only(use_ipv4, use_ipv6):
    """aioice never offers 127.0.0.1 on its own; the test's SFU is on loopback."""
    return ["127.0.0.1"]


aioice.ice.get_host_addresses = loopback_only


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


SDP_LOG = os.environ.get("AIORTC_SDP_LOG") == "1"


def sdp_log(what, sdp):
    if SDP_LOG:
        warn(f"{what}:\n{sdp}")


def warn(message):
    print(f"participant: {message}", file=sys.stderr, flush=True)


class MovingBars(VideoStreamTrack):
    """320x240 video at 30 fps whose picture changes every frame (so the encoder has
    real work), timed by aiortc's VideoStreamTrack."""

    WIDTH, HEIGHT = 320, 240

    def __init__(self):
        super().__init__()
        self.n = 0
        self.sent = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.WIDTH, self.HEIGHT, "yuv420p")
        luma, cb, cr = frame.planes
        row = bytes((x + 4 * self.n) & 0xFF for x in range(luma.line_size))
        luma.update(row * self.HEIGHT)
        cb.update(bytes([(64 + self.n) & 0xFF]) * cb.buffer_size)
        cr.update(bytes([128]) * cr.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        self.n += 1
        self.sent += 1
        return frame


class Tone(AudioStreamTrack):
    """A 440 Hz tone, 48 kHz mono, in 20 ms frames paced in real time."""

    RATE, SAMPLES = 48000, 960

    def __init__(self):
        super().__init__()
        second = [int(8000 * math.sin(2 * math.pi * 440 * i / self.RATE)) for i in range(self.RATE)]
        self.pcm = b"".join(s.to_bytes(2, "little", signed=True) for s in second)
        self.timestamp = None
        self.sent = 0

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self.timestamp is None:
            self.start, self.timestamp = time.time(), 0
        else:
            self.timestamp += self.SAMPLES
            await asyncio.sleep(self.start + self.timestamp / self.RATE - time.time())
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        offset = 2 * (self.timestamp % self.RATE)
        chunk = (self.pcm + self.pcm)[offset : offset + 2 * self.SAMPLES]
        frame.planes[0].update(chunk + bytes(frame.planes[0].buffer_size - len(chunk)))
        frame.pts, frame.sample_rate = self.timestamp, self.RATE
        frame.time_base = fractions.Fraction(1, self.RATE)
        self.sent += 1
        return frame


class Participant:
    def __init__(self, url, user_id, name):
        self.url, self.user_id, self.name = url, user_id, name
        self.sio = socketio.AsyncClient(reconnection=False)
        self.call_id = None
        self.pub = self.sub = None
        self.tracks = {}  # the SFU's latest map: sub mid -> {userId, source}
        self.received = {}  # sub mid -> what arrived on it
        self.offers = asyncio.Queue()  # the SFU's subscribe offers, applied in order
        self.tasks = set()
        self.audio, self.video = Tone(), MovingBars()

    def spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.done)

    def done(self, task):
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            warn(f"task failed: {task.exception()!r}")

    async def token(self):
        async with aiohttp.ClientSession() as http:
            body = {"userId": self.user_id, "name": self.name}
            async with http.post(f"{self.url}/demo/token", json=body) as response:
                reply = await response.json()
        if not reply.get("success"):
            raise RuntimeError(f"no demo token: {reply}")
        return reply["data"]["token"]

    async def request(self, event, data):
        ack = await self.sio.call(event, data, timeout=10)
        if not ack or not ack.get("ok"):
            raise RuntimeError(f"{event}: {ack}")
        return ack

    async def start(self, stop):
        sio = self.sio
        sio.on("call:incoming", self.on_incoming)
        sio.on("webrtc:offer", self.on_offer)
        sio.on("webrtc:answer", self.on_answer)
        sio.on("call:error", lambda e: warn(f"call:error {e}"))
        await sio.connect(self.url, auth={"token": await self.token()}, transports=["websocket"])
        emit("online", userId=self.user_id)
        self.spawn(self.apply_offers())
        self.spawn(self.report(stop))

    async def on_incoming(self, data):
        if self.call_id is not None:
            return warn(f"busy: ignored call {data.get('callId')}")
        self.call_id = data["callId"]
        self.spawn(self.join(data["callId"]))

    async def join(self, call_id):
        ack = await self.request("call:accept", {"callId": call_id})
        self.call_id = ack.get("callId") or ack["call"]["id"]
        # Host candidates on loopback only: the SFU is ICE-lite on 127.0.0.1, so the
        # iceServers of the ack (STUN/TURN) are not needed.
        config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        self.pub, self.sub = RTCPeerConnection(config), RTCPeerConnection(config)
        for label, pc in (("publish", self.pub), ("subscribe", self.sub)):
            pc.on("connectionstatechange", lambda label=label, pc=pc: warn(f"{label} connection {pc.connectionState}"))
        self.sub.on("track", self.on_track)
        emit("joined", callId=self.call_id)
        await self.publish()

    async def publish(self):
        sources = {}
        for track, source in ((self.audio, "microphone"), (self.video, "camera")):
            self.pub.addTransceiver(track, direction="sendonly")
            sources[track.id] = source
        await self.pub.setLocalDescription(await self.pub.createOffer())
        offer = {"type": "offer", "sdp": self.pub.localDescription.sdp}
        sdp_log("publish offer", offer["sdp"])
        await self.request(
            "webrtc:offer",
            {"callId": self.call_id, "targetUserId": SFU, "offer": offer, "sources": sources},
        )

    async def on_answer(self, data):
        if data.get("fromUserId") != SFU or data.get("callId") != self.call_id or self.pub is None:
            return
        answer = data["answer"]
        sdp_log("publish answer", answer["sdp"])
        await self.pub.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    async def on_offer(self, data):
        if data.get("fromUserId") == SFU:
            await self.offers.put(data)

    async def apply_offers(self):
        while True:
            data = await self.offers.get()
            while self.sub is None:  # an offer may come before our accept's ack
                await asyncio.sleep(0.05)
            if data.get("callId") != self.call_id:
                continue
            try:
                self.tracks = data.get("tracks") or {}
                offer = data["offer"]
                sdp_log("subscribe offer", offer["sdp"])
                await self.sub.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
                await self.sub.setLocalDescription(await self.sub.createAnswer())
                answer = {"type": "answer", "sdp": self.sub.localDescription.sdp}
                sdp_log("subscribe answer", answer["sdp"])
                await self.request("webrtc:answer", {"callId": self.call_id, "targetUserId": SFU, "answer": answer})
            except Exception as e:  # report and go on with the next offer
                warn(f"subscribe offer: {e!r}")

    def on_track(self, track):
        mid = next((t.mid for t in self.sub.getTransceivers() if t.receiver.track is track), None)
        owner = self.tracks.get(mid, {})
        row = self.received[mid] = {
            "kind": track.kind,
            "userId": owner.get("userId"),
            "source": owner.get("source"),
            "frames": 0,
        }
        self.spawn(self.count(track, row))

    async def count(self, track, row):
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            row["frames"] += 1
            if row["kind"] == "video":
                row["width"], row["height"] = frame.width, frame.height
            else:
                row["sampleRate"] = frame.sample_rate

    async def report(self, stop):
        while True:
            try:
                emit(
                    "stats",
                    pub=self.pub and self.pub.connectionState,
                    sub=self.sub and self.sub.connectionState,
                    sent={"audio": self.audio.sent, "video": self.video.sent},
                    received=self.received,
                )
            except BrokenPipeError:  # nobody reads us any more
                return stop.set()
            await asyncio.sleep(0.25)

    async def stop(self):
        for task in list(self.tasks):
            task.cancel()
        for pc in (self.pub, self.sub):
            if pc is not None:
                await pc.close()
        if self.sio.connected:
            await self.sio.disconnect()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the huddle server, e.g. http://127.0.0.1:3000")
    parser.add_argument("--user-id", required=True)
    parser.add_argument("--name", default="Aiortc")
    args = parser.parse_args()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def read_stdin():
        if not sys.stdin.buffer.raw.read(4096):
            loop.remove_reader(sys.stdin.fileno())
            stop.set()

    loop.add_reader(sys.stdin.fileno(), read_stdin)
    me = Participant(args.url, args.user_id, args.name)
    try:
        await me.start(stop)
        await stop.wait()
    finally:
        await me.stop()


if __name__ == "__main__":
    asyncio.run(main())
