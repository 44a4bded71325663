"""`python -m picochat ...` (what torchrun launches) is the same as the `picochat` command."""

from picochat.cli import main

if __name__ == "__main__":
    main()
