"""Use cases as library calls: what a command does, without its options parsing or its rendering.

`cli/*` parses options into a request, calls one function here and renders what it returns; the
gateway, `export` and `tune` call the same functions. Nothing here prints: warnings go to a callback.
"""
