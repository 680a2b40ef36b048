"""The ``biorules`` command line: click commands that parse, call a library function, print."""
