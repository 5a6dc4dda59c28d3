"""llmhost.models tests; a package so a test module can import a sibling's helpers relatively
(`from .test_ollama import make_store`), without a sys.path edit."""
