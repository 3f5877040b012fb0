"""The live bridge: wires ports, clock, scheduler, engine feed and controls, and guarantees
silence on the way out.

Clean after anything: as soon as the output is open, before the first note, the bridge
sends CC 123 (All Notes Off) and CC 120 (All Sound Off) on the channels it will use, so
notes left sounding by a bridge that crashed (or was killed) stop the moment a bridge
starts again. Every way out -- a normal stop, an exception, SIGINT, SIGTERM, a fatal engine
error -- runs the same `finally`: stop the timing thread, send a note-off for every sounding
note, then CC 123 and CC 120 on each channel used, and wait (bounded) until the MIDI system
confirms they left before the port closes; where it confirms (JACK), the CCs go once more in a later
cycle, for a receiver that missed the first. `panic_only()` is `atelier-midi --panic`.
"""
from __future__ import annotations

import gc
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from midi_bridge import exits, ports
from midi_bridge.clock import InternalClock, MidiClock
from midi_bridge.controls import ControlMap, default_map_file, learn
from midi_bridge.engine_feed import EngineAddress, EngineFeed, SessionSettings
from midi_bridge.eventlog import EventLog
from midi_bridge.notes import program_change, reset_messages
from midi_bridge.respond import PhraseRecorder
from midi_bridge.scheduler import HELPER_PRIORITY, Scheduler, raise_priority

COMPENSATE_EVERY = 0.5  # seconds between readings of the output's latency (connections change it)
PREROLL = 0.25       # seconds between the buffer being full and the internal clock's first beat
FLUSH_SECONDS = 0.5  # the longest wait for the MIDI system to deliver the last messages before the port closes
ALL_CHANNELS = tuple(range(16))


@dataclass
class Options:
    api: str | None = None
    port: str | None = None                  # existing output port (exact name); None: virtual
    virtual_name: str = ports.DEFAULT_PORT_NAME
    input: str | None = None                 # existing input port (exact name)
    virtual_input: bool = False
    clock: str = "internal"                  # or "midi": follow MIDI beat clock on the input
    bpm: float = 120.0
    bar_beats: float = 4.0                   # quarter notes per bar (from --meter)
    latency_ms: float = 0.0
    program: int | None = None               # 0-127
    panic_channels: tuple[int, ...] | None = None  # reset at start and exit (0-15); None: the channel played
    max_note_beats: float = 8.0
    lookahead: float = 2.0
    settings: SessionSettings = field(default_factory=SessionSettings)
    respond: bool = False
    respond_after: float = 2.0
    respond_bars: float = 2.0
    learn: list[str] = field(default_factory=list)
    control_file: Path | None = None
    address: EngineAddress = field(default_factory=EngineAddress)
    reconnect_for: float = 60.0
    event_log: Path | None = None
    realtime: bool = True                    # real-time priority for the timing thread where allowed


class Stop(Exception):
    """Raised in the main thread by SIGTERM (and SIGINT), so every exit runs the same cleanup."""


class StopSignals:
    """The SIGTERM and SIGINT handler. While the bridge starts it raises Stop at once (a wait for the
    engine must end); once playing, it only notes the signal and the playing loop raises Stop: raised
    inside a lock the main thread holds (an Event's wait, a JACK latency query), Stop could leave the
    lock released twice (RuntimeError instead of a clean stop, exit status 1)."""

    def __init__(self) -> None:
        self.received: str | None = None
        self.deferred = False

    def __call__(self, signum: int, _frame) -> None:
        self.received = signal.Signals(signum).name
        if not self.deferred:
            raise Stop(self.received)


def say(message: str) -> None:
    print(f"atelier-midi: {message}", file=sys.stderr, flush=True)


def run(opts: Options) -> int:
    helper = (lambda: raise_priority(HELPER_PRIORITY)) if opts.realtime else None
    if helper:
        helper()  # the main thread; threads started from it (the engine client's reader, MIDI) inherit this
    log = EventLog(opts.event_log, on_thread_start=helper)
    output = inp = scheduler = feed = None
    fatal: list[tuple[str, int]] = []
    stop = threading.Event()
    signals = StopSignals()
    previous = {s: signal.signal(s, signals) for s in (signal.SIGTERM, signal.SIGINT)}
    # The timing thread shares the interpreter lock with the bridge's other threads: it gets it back
    # within 0.1 ms, and garbage is collected only by the timing thread between events (an automatic
    # collection pauses whichever thread triggers it, while it holds the lock, for 1-3 ms).
    sys.setswitchinterval(0.0001)
    gc.freeze()
    gc.disable()
    try:
        control_file = opts.control_file or default_map_file()
        control_map = ControlMap.load(control_file)
        needs_input = opts.clock == "midi" or opts.respond or opts.learn
        if needs_input and opts.input is None and not opts.virtual_input:
            raise ValueError("this needs an input port: pass --input NAME (see --list-ports) or --virtual-input")
        if opts.input is not None or opts.virtual_input:
            inp = ports.open_input(opts.input, opts.api, opts.virtual_name)
        if opts.learn:
            messages: queue.Queue[list[int]] = queue.Queue()
            inp.listen(lambda message, _t: messages.put(message))
            try:
                learn(messages, opts.learn, control_map, say=say)
            except TimeoutError as e:
                raise ports.PortError(str(e)) from None
            control_map.save(control_file)
            say(f"saved the bindings to {control_file}")
            return exits.OK

        channel = opts.settings.channel
        reset_channels = frozenset(opts.panic_channels or (channel,)) | {channel}
        output = ports.open_output(opts.port, opts.api, opts.virtual_name, opts.realtime)
        reset(output, reset_channels, log)  # before anything else: a crashed bridge's notes stop now
        if hasattr(output, "on_connect"):  # JACK: and whenever the DAW connects (a virtual port after a restart)
            output.on_connect = lambda: reset(output, reset_channels, log)
        clock = MidiClock(opts.bpm) if opts.clock == "midi" else InternalClock(opts.bpm, time.monotonic() + 3600)
        scheduler = Scheduler(output.send, clock, bar_beats=opts.bar_beats,
                              latency=opts.latency_ms / 1000, max_note_beats=opts.max_note_beats,
                              channels=reset_channels, log=log, realtime=opts.realtime, lead=output.lead)
        recorder = PhraseRecorder(opts.respond_after) if opts.respond else None

        def on_fatal(message: str, code: int) -> None:
            fatal.append((message, code))
            stop.set()

        feed = EngineFeed(opts.address, opts.settings, scheduler, lookahead=opts.lookahead, respond=recorder,
                          respond_bars=opts.respond_bars, reconnect_for=opts.reconnect_for,
                          on_fatal=on_fatal, on_status=say, realtime=opts.realtime)
        feed.connect_first()
        scheduler.start()
        feed.start()
        if opts.program is not None:
            scheduler.send_now(program_change(channel, opts.program), "program")
        if not feed.ready.wait(30) and not fatal:
            raise TimeoutError("the engine did not send the first notes within 30 s; is it busy training? "
                               "(atelier jobs)")
        reset(output, reset_channels, log)  # again: the first may have left before the port's connections were live
        if isinstance(clock, InternalClock):
            clock.start_time = time.monotonic() + PREROLL
            scheduler.transport_started(0.0)
        if inp is not None:
            if isinstance(clock, MidiClock) and hasattr(inp, "on_missed"):  # JACK: pulses in cycles it missed
                inp.on_missed = clock.missed
            inp.listen(_input_handler(clock, scheduler, feed, recorder, control_map))
        where = (f"a new {output.api.upper() if output.api != 'coremidi' else 'CoreMIDI'} port {output.name!r} "
                 "(connect it to an instrument in your DAW)" if output.virtual
                 else f"{output.name!r} ({output.api})")
        listening = f"{'a new port ' if inp and inp.virtual else ''}{inp.name!r}" if inp else ""
        follows = f"following MIDI clock on {listening}" if opts.clock == "midi" else f"at {opts.bpm:g} BPM"
        log.note("ready", port=output.name, api=output.api, model=feed.model, clock=opts.clock,
                 input=inp.name if inp else None)
        follows_daw = isinstance(clock, MidiClock) and hasattr(output, "behind_audio")
        if follows_daw:
            _compensate(output, scheduler, log)
        if hasattr(output, "latency"):  # the native JACK output
            low, high = output.latency()
            rate = output.client.samplerate
            log.note("output", backend="jack", period=output.client.blocksize, rate=rate, lead=output.lead,
                     port_latency=[low, high])
            say(f"JACK: each note at its exact frame (period {output.client.blocksize} frames at {rate} Hz = "
                f"{output.period * 1000:.1f} ms; notes handed over {output.lead * 1000:.1f} ms ahead; the port's "
                f"playback latency {high} frames{f' = {high / rate * 1000:.1f} ms' if high else ''}, which the DAW "
                "compensates" + (f"; notes go {scheduler.compensation * 1000:.1f} ms early, heard with the DAW's "
                                 "audio" if scheduler.compensation else "") + ")")
        if scheduler.priority != "realtime" and opts.realtime:
            say(f"the timing thread runs at {scheduler.priority} priority (no real-time permission); on a busy "
                "machine sends may be late -- on Linux, give your user an rtprio limit (e.g. the 'audio' group)")
        say(f"playing {feed.model!r} to {where}, {follows}"
            f"{', answering phrases on ' + listening if recorder else ''}"
            f"{', controls (CCs) on ' + listening if inp and not recorder and opts.clock != 'midi' else ''}"
            "; Ctrl+C stops")
        compensated = 0.0
        signals.deferred = True
        while not stop.wait(0.05) and signals.received is None:
            if scheduler.error:
                raise scheduler.error
            if follows_daw and time.monotonic() - compensated > COMPENSATE_EVERY:  # the DAW may reconnect us
                compensated = time.monotonic()
                _compensate(output, scheduler, log)
            if isinstance(clock, MidiClock) and clock.check_timeout(time.monotonic()):
                scheduler.transport_stopped("clock lost")
        if signals.received is not None:
            raise Stop(signals.received)
        if fatal:
            say(fatal[0][0])
            return fatal[0][1]
        return exits.OK
    except Stop as e:
        say(f"stopping ({e}); all notes off")
        return exits.OK
    except ports.PortError as e:
        say(str(e))
        return exits.MIDI
    except (ConnectionError, TimeoutError) as e:
        say(str(e))
        return exits.ENGINE_UNREACHABLE
    except ValueError as e:
        say(str(e))
        return exits.USAGE
    finally:
        for sig in previous:  # a second Ctrl+C must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        if inp is not None:
            inp.listen(None)
        channels = frozenset(opts.panic_channels or (opts.settings.channel,))
        if scheduler is not None:
            scheduler.close("exit")
            channels = scheduler.channels
        elif output is not None:
            reset(output, channels, log)
        if output is not None:
            confirmed = output.flush(FLUSH_SECONDS)
            if confirmed:
                # A receiver that missed the cycle carrying the panic (an xrun on a loaded machine: 1 of 50
                # stops in a CI run) gets its notes ended by a reset in a later cycle.
                reset(output, channels, log)
                confirmed = output.flush(FLUSH_SECONDS)
            log.note("flushed", confirmed=confirmed)
            if hasattr(output, "late"):
                log.note("jack_output", cycles=output.cycles, late=output.late, dropped=output.dropped)
        if hasattr(inp, "missed_cycles"):
            log.note("jack_input", missed_cycles=inp.missed_cycles, repeated_messages=inp.repeated_messages)
        if feed is not None:
            feed.close()
        for opened in (output, inp):
            if opened is not None:
                opened.close()
        log.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _compensate(output, scheduler: Scheduler, log: EventLog) -> None:
    """Following a DAW's clock on JACK: send notes early by as much as the port's path is heard
    after the DAW's audio (a synth's latency), so they land on the DAW's beat."""
    early = output.behind_audio()
    if abs(early - scheduler.compensation) > 1e-6:
        scheduler.compensation = early
        log.note("compensation", ms=round(early * 1000, 3))


def reset(output: ports.Opened, channels: frozenset[int], log: EventLog) -> None:
    """CC 123 and CC 120 on each channel, now."""
    for message in reset_messages(channels):
        output.send(message)
        now = time.monotonic()
        log.sent(message, now, now, None, "reset")
    log.note("reset", channels=sorted(channels))


def panic_only(opts: Options) -> int:
    """`atelier-midi --panic`: CC 123 and CC 120 on the panic channels (default all 16), confirmed, then exit."""
    log = EventLog(opts.event_log)
    output = None
    try:
        output = ports.open_output(opts.port, opts.api, opts.virtual_name)
        channels = frozenset(opts.panic_channels or ALL_CHANNELS)
        reset(output, channels, log)
        confirmed = output.flush(FLUSH_SECONDS)
        log.note("flushed", confirmed=confirmed)
        say(f"sent All Notes Off and All Sound Off on channel{'s' if len(channels) > 1 else ''} "
            f"{_channel_list(channels)} to {output.name!r} ({output.api})"
            f"{'' if confirmed else '; the MIDI system cannot confirm delivery, waited ' + format(FLUSH_SECONDS, 'g') + ' s'}")
        return exits.OK
    except ports.PortError as e:
        say(str(e))
        return exits.MIDI
    finally:
        if output is not None:
            output.close()
        log.close()


def _channel_list(channels: frozenset[int]) -> str:
    return "1-16" if len(channels) == 16 else ", ".join(str(c + 1) for c in sorted(channels))


def _input_handler(clock, scheduler: Scheduler, feed: EngineFeed, recorder: PhraseRecorder | None,
                   control_map: ControlMap):
    """The input listener (runs on the MIDI system's thread): clock, the player's notes, CCs; `t` is
    when the message came (on JACK: the time of its frame)."""
    follow = isinstance(clock, MidiClock)

    def handle(message: list[int], t: float) -> None:
        status = message[0]
        if status >= 0xF0:
            if follow:
                change = clock.message(message, t)
                scheduler.wake()
                if change and change[0] == "start":
                    scheduler.transport_started(change[1])
                elif change and change[0] == "stop":
                    scheduler.transport_stopped("stop")
            return
        kind, channel = status & 0xF0, status & 0x0F
        if recorder is not None and kind in (0x80, 0x90) and len(message) == 3:
            beat = scheduler.playhead(t)
            if kind == 0x90 and message[2] > 0:
                recorder.key_down(channel, message[1], message[2], beat)
            else:
                recorder.key_up(channel, message[1], beat)
        elif kind == 0xB0 and len(message) == 3:
            action = control_map.interpret(message[1], message[2])
            if action is None:
                return
            name, value = action
            scheduler.log.note("control", name=name, value=value)
            if name in ("temperature", "density", "key"):
                feed.set_controls(**{name: value})
            elif name == "mute":
                scheduler.set_muted(value)
            elif name == "regenerate":
                feed.regenerate()
            elif name == "respond" and recorder is not None:
                recorder.force()

    return handle
