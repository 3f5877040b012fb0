"""`python -m midi_bridge` is `atelier-midi`."""
import sys

from midi_bridge.cli import main

sys.exit(main())
