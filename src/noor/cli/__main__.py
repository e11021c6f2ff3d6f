from noor.cli import main

main()
