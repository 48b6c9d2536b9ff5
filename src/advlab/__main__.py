"""`python -m advlab ...` (and `torchrun -m advlab ...`) is the `advlab` command."""
from .cli import main

if __name__ == "__main__":
    main()
