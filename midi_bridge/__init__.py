"""Atelier's MIDI bridge: streams the engine's notes into a DAW in time (see midi_bridge/cli.py)."""
