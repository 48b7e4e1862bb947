"""``python -m vitdense``: the LightningCLI entry point."""

from vitdense.cli import main

if __name__ == "__main__":
    main()
