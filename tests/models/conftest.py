"""Fixtures for llmhost.models tests (and for anyone who needs a Hub or a generated model).

- `fake_hub`: a real HTTP server on 127.0.0.1 serving fixture repos the way huggingface.co does, with
  HF_ENDPOINT/HF_HOME pointed at it (see tests/models/hubserver.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Helpers next to this file (model_makers, hubserver) are imported by name under --import-mode=importlib.
sys.path.insert(0, str(Path(__file__).parent))
