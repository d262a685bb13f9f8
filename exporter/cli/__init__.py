"""The command line: argv -> config -> run -> exit code (`commands`), and the demo.

The package stays empty so that `exporter.cli.demo` or a test need not load the parser.
"""
