"""The command-line commands, one module per command or command group; `charrnn.cli` registers them.

Each module imports only click and light parts of charrnn at the top, and everything heavy (torch,
matplotlib, the corpora) inside its command functions, so `charrnn --help` stays instant.
"""
