from llmhost.cli import run

run()
