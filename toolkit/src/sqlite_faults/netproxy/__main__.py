"""python -m sqlite_faults.netproxy --upstream HOST:PORT [--seed N] [--listen-port P]"""

from .proxy import main

main()
