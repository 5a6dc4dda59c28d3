"""Helpers shared across test folders and by benchmarks/: model writers, the GGUF editor, the fake Hub,
the serve CLI helpers, hand-built specs, JSON mutation, the hostile HTTP server and what the machine has
(`machine`: the native llama-server build, an AMX CPU, each found once).

Importable as `support.<module>` because pyproject's [tool.pytest.ini_options] puts tests/ on sys.path
(pythonpath); scripts outside pytest (benchmarks/, scripts/fuzz.py) add tests/ themselves.
Helpers used by one folder only stay in that folder.
"""
