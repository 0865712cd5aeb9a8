from aioqueue.cli import main

main()
