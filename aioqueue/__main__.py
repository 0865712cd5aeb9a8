from aioqueue._cli.main import main

main()
