"""The command line: one module per command; main() parses, checks, then trio.run()."""
