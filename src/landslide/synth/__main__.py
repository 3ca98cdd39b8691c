"""``python -m landslide.synth``: write a generated release (see :mod:`landslide.synth.release`)."""

from landslide.synth.release import main

main()
